-- Torch7's generator as seen from Lua: the fields of torch.getRNGState() (the C struct THGenerator on
-- x86-64, 5048 bytes), the number of 32-bit words a sampler call consumes, and a word counter.
require 'torch'
local M = {}

M.STRUCT = 'torch.getRNGState() bytes = the C struct THGenerator (x86-64, 5048 bytes, little-endian): '
   .. 'the_initial_seed uint64 @0, left int32 @8, seeded int32 @12, next uint64 @16, state[624] uint64 @24 '
   .. '(each holds a 32-bit MT word), normal_x float64 @5016, normal_y float64 @5024, normal_rho float64 @5032, '
   .. 'normal_is_valid int32 @5040 (+4 padding). Stream position (raw words drawn since the seed) = 0 right '
   .. 'after manualSeed (left=1, next=0), else 624*(R-1)+next where R is the number of state regenerations. '
   .. 'A numpy MT19937 in the same position has state.key == state[] and state.pos == next.'
M.BYTES = 5048

local function uint(bytes, offset, n)  -- little-endian unsigned integer of n bytes (exact below 2^53)
   local v = 0
   for i = n, 1, -1 do v = v * 256 + bytes[offset + i] end
   return v
end

-- {left, seeded, next, normal_is_valid} of a state (a ByteTensor from torch.getRNGState()).
function M.fields(state)
   assert(state:nElement() == M.BYTES, 'unexpected generator state size ' .. state:nElement())
   return {left = uint(state, 8, 4), seeded = uint(state, 12, 4), next = uint(state, 16, 8),
           normal_is_valid = uint(state, 5040, 4)}
end

function M.now(gen)
   return M.fields(gen and torch.getRNGState(gen) or torch.getRNGState())
end

-- Stream position from the state alone: exact while fewer than 624 words were drawn since the seed.
function M.position(f)
   if f.left == 1 and f.next == 0 then return 0 end
   return f.next
end

-- Words drawn by a normal fill of n values when a cached Box-Muller value was (cached) or was not there.
function M.normalWords(n, cached)
   local fresh = cached and n - 1 or n
   if fresh <= 0 then return 0 end
   return fresh + fresh % 2
end

return M
