-- Counting the generator words that tensor fills draw, with the module under construction and the fill
-- they belong to: the instrumentation of lua_init. The wrappers call the original methods and pass their
-- results through; they draw nothing themselves.
local rng = require 'lib.rng'
local M = {}

local WORDS = {  -- words drawn by one fill of n elements (normal: Box-Muller pairs and the cache)
   uniform = function(n) return n end, random = function(n) return n end, bernoulli = function(n) return n end,
   normal = function(n, cached) return rng.normalWords(n, cached) end,
}

-- Wraps the fill methods of the given tensor types; onFill(tensor, what, numel, words) is called after each
-- fill. Returns a function that removes the wrappers.
function M.watchFills(types, onFill)
   local undo = {}
   for _, tname in ipairs(types) do
      local mt = torch.getmetatable(tname)
      for method, words in pairs(WORDS) do
         local original = mt[method]
         mt[method] = function(self, ...)
            local before = rng.now()
            local r = original(self, ...)
            local after = rng.now()
            local n = words(self:nElement(), before.normal_is_valid ~= 0)
            -- the state only shows the position modulo 624: check the count against it
            assert((before.next + n - after.next) % 624 == 0 or (before.left == 1 and before.next == 0
               and (n - after.next) % 624 == 0), tname .. ':' .. method .. ': unexpected word count')
            onFill(self, tname .. ':' .. method, self:nElement(), n)
            return r
         end
         undo[#undo + 1] = function() mt[method] = original end
      end
   end
   return function() for _, f in ipairs(undo) do f() end end
end

-- Wraps __init of the named classes: onEnter(module) before the outermost constructor of an object runs,
-- onExit(module) after it. Returns a function that removes the wrappers.
function M.watchConstructors(classNames, onEnter, onExit)
   local undo, active = {}, {}
   for _, name in ipairs(classNames) do
      local mt = torch.getmetatable(name)
      if mt then
         local own = rawget(mt, '__init')
         local original = mt.__init  -- its own, or the one it inherits
         rawset(mt, '__init', function(self, ...)
            if active[self] then return original(self, ...) end  -- a parent's constructor
            active[self] = true
            onEnter(self)
            original(self, ...)
            onExit(self)
            active[self] = nil
         end)
         undo[#undo + 1] = function() rawset(mt, '__init', own) end
      end
   end
   return function() for _, f in ipairs(undo) do f() end end
end

return M
