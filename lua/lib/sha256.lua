-- SHA-256 (FIPS 180-4) of a tensor's bytes or a string, in LuaJIT (bit operations on 32-bit words).
local bit = require 'bit'
local ffi = require 'ffi'
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, ror, tobit, tohex, bswap = bit.rshift, bit.ror, bit.tobit, bit.tohex, bit.bswap

local function words(t)  -- as int32 (ffi saturates numbers above 2^31 instead of wrapping)
   for i, v in ipairs(t) do t[i] = tobit(v) end
   return t
end

local K = ffi.new('int32_t[64]', words{
   0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
   0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
   0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
   0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
   0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
   0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
   0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
   0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2})

-- the compression of the 64-byte block at p (uint8_t*) into h (int32_t[8]); w: int32_t[64] scratch
local function block(h, p, w)
   local words = ffi.cast('const uint32_t*', p)
   for i = 0, 15 do w[i] = bswap(words[i]) end  -- big-endian words (x86-64 is little-endian)
   for i = 16, 63 do
      local a, b = w[i - 15], w[i - 2]
      local s0 = bxor(ror(a, 7), ror(a, 18), rshift(a, 3))
      local s1 = bxor(ror(b, 17), ror(b, 19), rshift(b, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
   end
   local a, b, c, d, e, f, g, hh = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
   for i = 0, 63 do
      local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = tobit(hh + S1 + ch + K[i] + w[i])
      local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      local t2 = tobit(S0 + maj)
      hh, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
   end
   h[0], h[1], h[2], h[3] = tobit(h[0] + a), tobit(h[1] + b), tobit(h[2] + c), tobit(h[3] + d)
   h[4], h[5], h[6], h[7] = tobit(h[4] + e), tobit(h[5] + f), tobit(h[6] + g), tobit(h[7] + hh)
end

-- hex digest of n bytes at ptr
local function digest(ptr, n)
   local h = ffi.new('int32_t[8]', words{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19})
   local w = ffi.new('int32_t[64]')
   local p = ffi.cast('const uint8_t*', ptr)
   local full = n - n % 64
   for off = 0, full - 1, 64 do block(h, p + off, w) end
   local rest = n - full
   local tail = ffi.new('uint8_t[128]')
   ffi.copy(tail, p + full, rest)
   tail[rest] = 0x80
   local len = rest < 56 and 64 or 128
   local bits = n * 8
   for i = 1, 8 do
      tail[len - i] = bits % 256
      bits = math.floor(bits / 256)
   end
   for off = 0, len - 1, 64 do block(h, tail + off, w) end
   local out = {}
   for i = 0, 7 do out[i + 1] = tohex(h[i]) end
   return table.concat(out)
end

local M = {}
function M.string(s) return digest(s, #s) end
-- of a contiguous tensor's elements as stored (little-endian on x86-64)
function M.tensor(t)
   t = t:contiguous()
   return digest(torch.data(t), t:nElement() * t:elementSize())
end
return M
