-- Logs of the random draws and image-package calls that a piece of Lua code makes, in call order, for the
-- transforms case. Every random source a transform could reach is wrapped (the torch.* samplers, the
-- sampling methods of Float/Double/Byte/Long tensors, math.random); the wrappers call the original and
-- record its arguments and result. Logging is on only between start() and stop().
local json = require 'lib.json'
local M = {}

local log, on = nil, false
local SCALARS = {'uniform', 'random', 'randperm', 'normal', 'bernoulli', 'rand', 'randn', 'cauchy', 'logNormal',
                 'exponential', 'geometric'}
local METHODS = {'normal', 'uniform', 'bernoulli', 'random', 'cauchy', 'logNormal', 'exponential', 'geometric'}
local TENSORS = {'torch.FloatTensor', 'torch.DoubleTensor', 'torch.ByteTensor', 'torch.LongTensor'}

local function pack(...) return {n = select('#', ...), ...} end
local function list(t) local l = {} for i = 1, t.n do l[i] = t[i] end return json.array(l) end
local function flat(t) return t:contiguous():view(-1):totable() end

local installed = false
local function install()
   if installed then return end
   installed = true
   for _, name in ipairs(SCALARS) do
      local original = torch[name]
      if original then
         torch[name] = function(...)
            local args = pack(...)
            local r = original(...)
            if on then
               local e = {fn = 'torch.' .. name, args = list(args)}
               if torch.isTensor(r) then e.result, e.type = flat(r), torch.type(r) else e.result = r end
               log[#log + 1] = e
            end
            return r
         end
      end
   end
   for _, tname in ipairs(TENSORS) do
      local mt = torch.getmetatable(tname)
      for _, name in ipairs(METHODS) do
         local original = mt[name]
         if original then
            mt[name] = function(self, ...)
               local args = pack(...)
               local r = original(self, ...)
               if on then
                  log[#log + 1] = {fn = 'Tensor:' .. name, args = list(args), result = flat(self),
                                   type = torch.type(self), size = self:size():totable()}
               end
               return r
            end
         end
      end
   end
   local mathRandom = math.random
   math.random = function(...)
      local args = pack(...)
      local r = mathRandom(...)
      if on then log[#log + 1] = {fn = 'math.random', args = list(args), result = r} end
      return r
   end
end

-- image.scale/crop/hflip/rotate calls: {fn, args (tensors as {tensor = size}), out (result size)}
local imageLog
local function installImage(image)
   for _, name in ipairs{'scale', 'crop', 'hflip', 'rotate'} do
      local original = image[name]
      image[name] = function(...)
         local args = pack(...)
         local r = original(...)
         if on then
            local a = {}
            for i = 1, args.n do
               a[i] = torch.isTensor(args[i]) and {tensor = args[i]:size():totable()} or args[i]
            end
            imageLog[#imageLog + 1] = {fn = 'image.' .. name, args = json.array(a), out = r:size():totable()}
         end
         return r
      end
   end
end

function M.start(image)
   install()
   if image and not image.__observed then installImage(image); image.__observed = true end
   log, imageLog, on = json.array(), json.array(), true
end

function M.stop()
   on = false
   return log, imageLog
end

return M
