-- Writer of a golden case: NAME.json (header + meta) and NAME.bin (every tensor's raw little-endian values,
-- C-contiguous, back to back, in the order they were added).
require 'torch'
local json = require 'lib.json'

local M = {}
local Case = {}
Case.__index = Case

local DTYPES = {  -- torch type -> (dtype name, element size, DiskFile writer)
   ['torch.FloatTensor'] = {'float32', 4, 'writeFloat'},
   ['torch.DoubleTensor'] = {'float64', 8, 'writeDouble'},
   ['torch.LongTensor'] = {'int64', 8, 'writeLong'},
   ['torch.ByteTensor'] = {'uint8', 1, 'writeByte'},
}
M.FORMAT = 'tensors[name] = {dtype, shape, offset, nbytes}: raw little-endian values, C (row-major) order, '
   .. 'at byte offset in %s'

function M.new(name)
   return setmetatable({name = name, order = {}, specs = {}, values = {}, offset = 0, meta = {}}, Case)
end

-- Add a tensor under key; as_type converts it first (e.g. 'torch.FloatTensor' to store float64 values as
-- float32). The value is copied, so later changes to t do not matter.
function Case:add(key, t, as_type)
   assert(torch.isTensor(t), key .. ': not a tensor')
   assert(not self.specs[key], 'tensor added twice: ' .. key)
   assert(t:dim() > 0, key .. ': empty tensor')
   local v = (as_type and t:type(as_type) or t):clone()  -- contiguous, own storage
   local d = DTYPES[torch.type(v)] or error(key .. ': unsupported type ' .. torch.type(v))
   local shape = json.array(v:size():totable())
   local nbytes = v:nElement() * d[2]
   self.specs[key] = {dtype = d[1], shape = shape, offset = self.offset, nbytes = nbytes}
   self.order[#self.order + 1] = key
   self.values[key] = {v, d[3]}
   self.offset = self.offset + nbytes
   return key
end

function Case:has(key) return self.specs[key] ~= nil end

-- Writes DIR/NAME.json and DIR/NAME.bin; returns the two file names.
function Case:write(dir)
   assert(#self.order > 0, self.name .. ': no tensors')
   local bin_name = self.name .. '.bin'
   local f = torch.DiskFile(dir .. '/' .. bin_name, 'w'):binary()
   f:littleEndianEncoding()
   for _, key in ipairs(self.order) do
      local v, writer = table.unpack(self.values[key])
      f[writer](f, v:storage())
   end
   f:close()
   local header = {
      format = string.format(M.FORMAT, bin_name),
      bin_file = bin_name,
      bin_size = self.offset,
      tensors = json.object(self.specs),
      tensor_order = json.array(self.order),
      meta = self.meta,
   }
   local jf = assert(io.open(dir .. '/' .. self.name .. '.json', 'w'))
   jf:write(json.encode(header, ' '), '\n')
   jf:close()
   return {self.name .. '.json', bin_name}
end

return M
