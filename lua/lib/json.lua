-- A JSON encoder whose numbers read back exactly: integers (|x| < 2^53) as integers, other numbers with
-- 17 significant digits. (Debian's lua-cjson stops at 14 digits and dkjson uses tostring, also 14.)
-- Objects are written with sorted keys, so that the same table always gives the same text.
local M = {}

-- Mark a table as an array or an object (metatable field __json = 'array' | 'object'); an empty unmarked
-- table is written as [].
function M.array(t) return setmetatable(t or {}, {__json = 'array'}) end
function M.object(t) return setmetatable(t or {}, {__json = 'object'}) end

local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n',
                 ['\r'] = '\\r', ['\t'] = '\\t'}
local function quote(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      return escapes[c] or string.format('\\u%04x', c:byte())
   end) .. '"'
end

local function number(x)
   if x ~= x or x == math.huge or x == -math.huge then
      error('json: cannot encode ' .. tostring(x))
   end
   if x == math.floor(x) and math.abs(x) < 2^53 then
      if x == 0 then return '0' end
      return string.format('%d', x)
   end
   return string.format('%.17g', x)
end

local function is_array(t)
   local mt = getmetatable(t)
   if mt and mt.__json then return mt.__json == 'array' end
   local n = 0
   for _ in pairs(t) do n = n + 1 end
   for i = 1, n do if t[i] == nil then return false end end
   return true
end

local encode
local function encode_table(t, out, indent, depth)
   local pad = indent and ('\n' .. string.rep(indent, depth + 1)) or ''
   local close = indent and ('\n' .. string.rep(indent, depth)) or ''
   if is_array(t) then
      if #t == 0 then out[#out + 1] = '[]'; return end
      out[#out + 1] = '['
      for i = 1, #t do
         if i > 1 then out[#out + 1] = ',' end
         out[#out + 1] = pad
         encode(t[i], out, indent, depth + 1)
      end
      out[#out + 1] = close .. ']'
   else
      local keys = {}
      for k in pairs(t) do
         if type(k) ~= 'string' then error('json: object key ' .. tostring(k) .. ' is not a string') end
         keys[#keys + 1] = k
      end
      table.sort(keys)
      if #keys == 0 then out[#out + 1] = '{}'; return end
      out[#out + 1] = '{'
      for i, k in ipairs(keys) do
         if i > 1 then out[#out + 1] = ',' end
         out[#out + 1] = pad .. quote(k) .. (indent and ': ' or ':')
         encode(t[k], out, indent, depth + 1)
      end
      out[#out + 1] = close .. '}'
   end
end

encode = function(v, out, indent, depth)
   local tv = type(v)
   if tv == 'table' then encode_table(v, out, indent, depth)
   elseif tv == 'string' then out[#out + 1] = quote(v)
   elseif tv == 'number' then out[#out + 1] = number(v)
   elseif tv == 'boolean' then out[#out + 1] = tostring(v)
   elseif v == nil then out[#out + 1] = 'null'
   else error('json: cannot encode a ' .. tv) end
end

-- indent: nil for compact text, else the string repeated per level
function M.encode(v, indent)
   local out = {}
   encode(v, out, indent, 0)
   return table.concat(out)
end

return M
