-- numpy's float64 sum (np.sum of a contiguous float64 array): 0 + pairwise sum with 8 accumulators over
-- blocks of at most 128 elements, as numpy's DOUBLE_pairwise_sum. Torch7's own :sum() adds sequentially,
-- which differs in the last bits; meta values documented as "numpy float64 sums" use this.
local M = {}

local function pairwise(p, lo, n)
   if n < 8 then
      local r = 0.0
      for i = lo, lo + n - 1 do r = r + p[i] end
      return r
   elseif n <= 128 then
      local r0, r1, r2, r3, r4, r5, r6, r7 = p[lo], p[lo + 1], p[lo + 2], p[lo + 3], p[lo + 4], p[lo + 5],
         p[lo + 6], p[lo + 7]
      local i = 8
      local stop = n - n % 8
      while i < stop do
         local b = lo + i
         r0, r1, r2, r3 = r0 + p[b], r1 + p[b + 1], r2 + p[b + 2], r3 + p[b + 3]
         r4, r5, r6, r7 = r4 + p[b + 4], r5 + p[b + 5], r6 + p[b + 6], r7 + p[b + 7]
         i = i + 8
      end
      local res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
      for j = lo + i, lo + n - 1 do res = res + p[j] end
      return res
   end
   local n2 = math.floor(n / 2)
   n2 = n2 - n2 % 8
   return pairwise(p, lo, n2) + pairwise(p, lo + n2, n - n2)
end

-- the numpy float64 sum of a tensor's values (abs: of their absolute values)
function M.sum(t, abs)
   local d = t:double()
   if abs then d = torch.abs(d) end
   d = d:contiguous()
   return 0.0 + pairwise(torch.data(d), 0, d:nElement())
end

return M
