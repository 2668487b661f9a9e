-- What every driver needs: its command line, the Lua paths to the GUNN files and the CUDA stand-in, and
-- one-line failures.
local M = {}

M.LUA_DIR = debug.getinfo(1, 'S').source:match('^@(.*)/lib/common%.lua$')
   or error('common.lua: cannot find its own folder')
if M.LUA_DIR:sub(1, 1) ~= '/' then  -- absolute, since some drivers change the working folder
   local p = io.popen('pwd')
   M.LUA_DIR = p:read('*l') .. '/' .. M.LUA_DIR
   p:close()
end
-- this folder (lib.*, models/gunn-mini.lua) and the CUDA stand-in
package.path = table.concat({M.LUA_DIR .. '/?.lua', M.LUA_DIR .. '/stubs/?.lua', package.path}, ';')

function M.die(msg)
   io.stderr:write((tostring(msg):gsub('\n', ' ')), '\n')
   os.exit(1)
end

-- Parses arg (--key value pairs) against spec {key = {default, kind}} (kind: 'string', 'number', 'list'
-- (comma-separated numbers), 'bool'); a default of false means required. Returns the options and the
-- command line as one string.
function M.parse(argv, spec, usage)
   local opt, seen = {}, {}
   local i = 1
   while i <= #argv do
      local key = argv[i]:match('^%-%-([%w_]+)$')
      if not key or not spec[key] then M.die('unknown argument ' .. argv[i] .. '\nusage: ' .. usage) end
      local v = argv[i + 1]
      if v == nil then M.die('missing value for --' .. key) end
      local kind = spec[key][2]
      if kind == 'number' then
         v = tonumber(v) or M.die('--' .. key .. ' needs a number, got ' .. argv[i + 1])
      elseif kind == 'list' then
         local l = {}
         for x in v:gmatch('[^,]+') do l[#l + 1] = tonumber(x) or M.die('--' .. key .. ': not a number: ' .. x) end
         v = l
      elseif kind == 'bool' then
         if v ~= 'true' and v ~= 'false' then M.die('--' .. key .. ' needs true or false') end
         v = v == 'true'
      end
      opt[key], seen[key] = v, true
      i = i + 2
   end
   for key, s in pairs(spec) do
      if not seen[key] then
         if s[1] == false then M.die('missing --' .. key .. '\nusage: ' .. usage) end
         opt[key] = s[1]
      end
   end
   return opt, M.commandLine(argv, spec)
end

-- Folders given on the command line appear in the recorded command as these names, so that a golden set
-- does not carry the paths of the machine that made it.
M.PLACEHOLDERS = {gunn = 'GUNN_DIR', out = 'OUTDIR', data = 'DATA_DIR', work = 'WORK_DIR', files = 'FILES_DIR',
                  tmp = 'TMP_FILE'}

-- The driver's command line as recorded in meta.config.command.
function M.commandLine(argv, spec)
   local function rel(path)  -- files of this folder relative to the repository
      local root = M.LUA_DIR:match('^(.*)/[^/]*$')
      if root and path:sub(1, #root + 1) == root .. '/' then return path:sub(#root + 2) end
      return path
   end
   local words = {'th', rel(arg[0])}
   local i = 1
   while i <= #argv do
      local key = argv[i]:match('^%-%-([%w_]+)$')
      words[#words + 1] = argv[i]
      if argv[i + 1] then
         words[#words + 1] = M.PLACEHOLDERS[key] or rel(argv[i + 1])
      end
      i = i + 2
   end
   for j, w in ipairs(words) do
      if w:find('[^%w%-%._/,=:]') then words[j] = "'" .. w:gsub("'", "'\\''") .. "'" end
   end
   return table.concat(words, ' ')
end

-- The environment that decides float sums (OpenBLAS kernels and threads, OpenMP threads).
function M.environment()
   local e = {}
   for _, k in ipairs{'OPENBLAS_CORETYPE', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS'} do
      e[k] = os.getenv(k) or 'unset'
   end
   return e
end

-- Lua paths: the GUNN checkout first (its files are required unmodified, e.g. 'models/init'), so that
-- this folder only adds what GUNN lacks. cudaType: what torch.CudaTensor stands for.
function M.setup(gunnDir, cudaType)
   local f = io.open(gunnDir .. '/models/GunnLayer.lua')
   if not f then M.die('not a GUNN checkout: ' .. gunnDir) end
   f:close()
   rawset(_G, 'CUDA_STANDIN_TYPE', cudaType or 'torch.FloatTensor')
   package.path = gunnDir .. '/?.lua;' .. package.path
   require 'torch'
   require 'nn'
   torch.setnumthreads(1)
end

-- Runs this same driver again in a fresh Lua state with extra arguments (for code that can only be loaded
-- once per state, such as the two CIFAR dataset files, which register the same class name).
function M.spawn(extra)
   local words = {arg[-1], arg[0]}
   for _, a in ipairs(arg) do words[#words + 1] = a end
   for _, a in ipairs(extra) do words[#words + 1] = a end
   for i, w in ipairs(words) do words[i] = "'" .. tostring(w):gsub("'", "'\\''") .. "'" end
   local ok = os.execute(table.concat(words, ' '))
   if ok ~= true and ok ~= 0 then error('sub-process failed: ' .. table.concat(words, ' ')) end
end

-- A fresh temporary file name.
function M.tmpname() return os.tmpname() end

-- The shallow copy of a table of plain values (for meta).
function M.copy(t)
   local c = {}
   for k, v in pairs(t) do c[k] = v end
   return c
end

-- Runs f(), exiting with a one-line message on an error.
function M.main(f)
   local ok, err = xpcall(f, debug.traceback)
   if not ok then
      io.stderr:write('driver failed: ', (tostring(err):gsub('\n', ' | ')), '\n')
      os.exit(1)
   end
end

return M
