-- CPU stand-in for cunn: no modules. It makes the Cuda type names usable in Module:type() and
-- Criterion:type() by converting them to the CPU types of the cutorch stand-in (Module._type keeps the
-- name it was given, as on a GPU).
require 'nn'
local cutorch = require 'cutorch'

if not nn.utils.__cudaStandin then
   local recursiveType = nn.utils.recursiveType
   nn.utils.recursiveType = function(param, typename, tensorCache)
      return recursiveType(param, cutorch.typeMap[typename] or typename, tensorCache)
   end
   nn.utils.__cudaStandin = true
end

return {standin = true}
