-- Golden case of a real training run: GUNN's main.lua itself, run as `th main.lua ARGS` would run it, in a
-- working folder that holds the GUNN files (links) and gen/<dataset>.t7 made from the given images.
-- The run is observed from outside by wrappers that pass every result through unchanged and draw nothing.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'lua_run.lua --gunn DIR --data DIR --work DIR --out DIR --name CASE [--net gunn-15] [--dataset cifar10] '
   .. '[--batch 8] [--epochs 2] [--seed 5] [--LR 0.1] [--precision double] [--threads 1] [--data_seed 2024] '
   .. '[--store_train 2] [--store_test 1]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, data = {false, 'string'}, work = {false, 'string'}, out = {false, 'string'},
   name = {false, 'string'}, net = {'gunn-15', 'string'}, dataset = {'cifar10', 'string'},
   batch = {'8', 'string'}, epochs = {'2', 'string'}, seed = {'5', 'string'}, LR = {'0.1', 'string'},
   precision = {'double', 'string'}, threads = {'1', 'string'}, data_seed = {2024, 'number'},
   store_train = {2, 'number'}, store_test = {1, 'number'},
}, USAGE)

local ffi = require 'ffi'
ffi.cdef 'int chdir(const char *path);'

local function sh(cmd)
   local ok = os.execute(cmd)
   if ok ~= true and ok ~= 0 then error('failed: ' .. cmd) end
end
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function readBytes(path)
   local f = assert(io.open(path, 'rb'))
   local s = f:read('*a')
   f:close()
   local t = torch.ByteTensor(#s)
   if #s > 0 then ffi.copy(torch.data(t), s, #s) end
   return t
end
local function absolute(path)
   if path:sub(1, 1) == '/' then return path end
   local p = io.popen('pwd'); local cwd = p:read('*l'); p:close()
   return cwd .. '/' .. path
end

-- The working folder: links to every GUNN file, models/ merged with this project's lua/models/.
local function prepareWork(gunn, work)
   sh('rm -rf ' .. q(work) .. ' && mkdir -p ' .. q(work .. '/models') .. ' ' .. q(work .. '/gen'))
   for _, entry in ipairs{'main.lua', 'opts.lua', 'train.lua', 'dataloader.lua', 'checkpoints.lua', 'datasets'} do
      sh('ln -s ' .. q(gunn .. '/' .. entry) .. ' ' .. q(work .. '/' .. entry))
   end
   sh('for f in ' .. q(gunn) .. '/models/*.lua ' .. q(common.LUA_DIR) .. '/models/*.lua; do ln -sf "$f" '
      .. q(work .. '/models/') .. '; done')
end

common.main(function()
   local gunn, data, work = absolute(opt.gunn), absolute(opt.data), absolute(opt.work)
   local out = absolute(opt.out)
   local cudaType = opt.precision == 'double' and 'torch.DoubleTensor' or 'torch.FloatTensor'
   prepareWork(gunn, work)
   common.setup(work, cudaType)
   local container = require 'lib.container'
   local modtree = require 'lib.modtree'
   local rng = require 'lib.rng'
   local json = require 'lib.json'
   require 'paths'

   -- the images and gen/<dataset>.t7 in the layout of GUNN's datasets/<dataset>-gen.lua
   local function readImages(name) return readBytes(data .. '/raw/' .. name .. '.bin') end
   local trainLabels = readImages('train_labels')
   local valLabels = readImages('val_labels')
   local nTrain, nVal = trainLabels:nElement(), valLabels:nElement()
   local trainImages = readImages('train_images'):view(nTrain, 3, 32, 32)
   local valImages = readImages('val_images'):view(nVal, 3, 32, 32)
   local cacheRel = 'gen/' .. opt.dataset .. '.t7'
   torch.save(work .. '/' .. cacheRel, {train = {data = trainImages, labels = trainLabels},
                                        val = {data = valImages, labels = valLabels}})
   local pyFolder = opt.dataset == 'cifar10' and 'cifar-10-batches-py' or 'cifar-100-python'
   local pyFiles = {}
   local listing = io.popen('ls ' .. q(data .. '/' .. pyFolder))
   for f in listing:lines() do pyFiles[#pyFiles + 1] = f end
   listing:close()
   local order = {data_batch_1 = 1, data_batch_2 = 2, data_batch_3 = 3, data_batch_4 = 4, data_batch_5 = 5,
                  test_batch = 6, ['batches.meta'] = 7, train = 1, test = 2, meta = 3}
   table.sort(pyFiles, function(a, b) return (order[a] or 99) < (order[b] or 99) end)

   local mainArgs = {'-netType', opt.net, '-dataset', opt.dataset, '-batchSize', opt.batch, '-nEpochs', opt.epochs,
                     '-manualSeed', opt.seed, '-LR', opt.LR, '-precision', opt.precision, '-nGPU', '1',
                     '-nThreads', opt.threads}
   local batchSize = tonumber(opt.batch)

   -- observers --------------------------------------------------------------------------------------------
   local printed, inModelFile = {}, false
   local print0 = print
   print = function(...)
      local parts, n = {}, select('#', ...)
      for i = 1, n do parts[i] = tostring((select(i, ...))) end
      local plain = true
      for i = 1, n do if type((select(i, ...))) == 'table' then plain = false end end
      if plain and not inModelFile then printed[#printed + 1] = table.concat(parts, '\t') end
      return print0(...)
   end
   local createModel = require('models/' .. opt.net)
   package.loaded['models/' .. opt.net] = function(...)  -- the model file's own prints are not log lines
      inModelFile = true
      local ok, m = pcall(createModel, ...)
      inModelFile = false
      if not ok then error(m, 0) end
      return m
   end

   local states, perms, epochs, iterations = {}, {}, {}, {}
   local function state(when)
      local f = rng.now()
      states[#states + 1] = {when = when, left = f.left, next = f.next, normal_is_valid = f.normal_is_valid}
   end
   local phase, epoch, currentPerm, current = nil, nil, nil, nil
   local randperm = torch.randperm
   torch.randperm = function(n, ...)
      local f = rng.now()
      local r = randperm(n, ...)
      currentPerm = r:clone()
      perms[#perms + 1] = {n = n, result = r:totable(), tensor_type = torch.type(r), epoch = epoch,
                           phase_next = phase, gen_left_before = f.left, gen_next_before = f.next}
      return r
   end

   local trainer, rngAfterSetup, initParams, params, bns
   local T = torch.getmetatable('resnet.Trainer') or require('train') and torch.getmetatable('resnet.Trainer')
   local init0, train0, test0 = T.__init, T.train, T.test
   local copyInputs0, computeScore0 = T.copyInputs, T.computeScore
   T.__init = function(self, ...)
      init0(self, ...)
      trainer = self
      state('Trainer.__init (after setup and DataLoader.create)')
      rngAfterSetup = torch.getRNGState()
      params, bns = modtree.params(self.model), modtree.bns(self.model)
      initParams = {}
      for i, p in ipairs(params) do initParams[i] = p.tensor:clone() end
   end
   local nIter
   T.train = function(self, e, loader)
      phase, epoch, nIter = 'train', e, 0
      state(('start of Trainer:train(%d)'):format(e))
      local a, b, c = train0(self, e, loader)
      epochs[#epochs + 1] = {phase = 'train', epoch = e, learningRate = self.optimState.learningRate, returned = {a, b, c}}
      return a, b, c
   end
   T.test = function(self, e, loader)
      phase, epoch, nIter = 'test', e, 0
      state(('start of Trainer:test(%d)'):format(e))
      local a, b = test0(self, e, loader)
      epochs[#epochs + 1] = {phase = 'test', epoch = e, returned = {a, b}}
      return a, b
   end
   T.copyInputs = function(self, sample)
      copyInputs0(self, sample)
      nIter = nIter + 1
      local n = self.input:size(1)
      local first = (nIter - 1) * batchSize
      local indices = {}
      for i = 1, n do indices[i] = currentPerm[first + i] end
      local x = self.input
      current = {phase = phase, epoch = epoch, iter = nIter, batch_size = n, indices = indices,
                 target = self.target:totable(), input_type = torch.type(x), input_sum = x:sum(),
                 input_abs_sum = torch.abs(x):sum(), input_sq_sum = torch.cmul(x, x):sum(),
                 input = x:clone()}
      iterations[#iterations + 1] = current
   end
   T.computeScore = function(self, ...)
      local top1, top5 = computeScore0(self, ...)
      current.top1, current.top5 = top1, top5
      return top1, top5
   end
   local CE = torch.getmetatable('nn.CrossEntropyCriterion')
   local forward0 = CE.forward
   CE.forward = function(self, input, target)
      local loss = forward0(self, input, target)
      if current then current.loss, current.logits, current.logits_type = loss, input:clone(), torch.type(input) end
      return loss
   end
   local optim = require 'optim'
   local sgd0 = optim.sgd
   optim.sgd = function(feval, x, st)
      local a, b = sgd0(feval, x, st)
      current.lr, current.param_sum_after, current.param_abs_sum_after = st.learningRate, x:sum(), torch.abs(x):sum()
      current.optim_evalCounter_after = st.evalCounter
      return a, b
   end

   -- the run -----------------------------------------------------------------------------------------------
   assert(ffi.C.chdir(work) == 0, 'cannot enter ' .. work)
   rawset(_G, 'arg', mainArgs)
   local t0 = os.time()
   dofile('main.lua')
   local wall = os.time() - t0
   state('after main.lua returned')
   assert(ffi.C.chdir(out) == 0, 'cannot enter ' .. out)
   print = print0

   -- the case ----------------------------------------------------------------------------------------------
   local case = container.new(opt.name)
   case:add('data/train/images', trainImages)
   case:add('data/train/labels', trainLabels:long())
   case:add('data/val/images', valImages)
   case:add('data/val/labels', valLabels:long())
   local pyMeta = {}
   for _, f in ipairs(pyFiles) do
      local rel = pyFolder .. '/' .. f
      local bytes = readBytes(data .. '/' .. rel)
      case:add('pyfiles/' .. rel, bytes)
      pyMeta[#pyMeta + 1] = {tensor = 'pyfiles/' .. rel, path = rel, nbytes = bytes:nElement()}
   end
   case:add('t7cache/' .. cacheRel, readBytes(work .. '/' .. cacheRel))
   local exact = true
   for i, p in ipairs(params) do
      local f = initParams[i]:float()
      exact = exact and torch.equal(f:typeAs(initParams[i]), initParams[i])
      case:add('init/param/' .. p.name, f)
   end
   -- batch inputs: the first store_train of every training epoch, the first store_test of the first test
   for _, it in ipairs(iterations) do
      local key = ('%s/e%d/b%d'):format(it.phase, it.epoch, it.iter)
      local keep = (it.phase == 'train' and it.iter <= opt.store_train)
         or (it.phase == 'test' and it.epoch == 1 and it.iter <= opt.store_test)
      if keep then it.input_stored = case:add(key .. '/input', it.input) end
   end
   local iterMeta = {}
   local series = {epoch = {}, iter = {}, loss = {}, top1 = {}, top5 = {}, lr = {}, param_sum_after = {},
                   param_abs_sum_after = {}}
   for _, it in ipairs(iterations) do
      local key = ('%s/e%d/b%d'):format(it.phase, it.epoch, it.iter)
      it.logits_tensor = case:add(key .. '/logits', it.logits)
      it.input, it.logits = nil, nil
      iterMeta[#iterMeta + 1] = it
      if it.phase == 'train' then
         for k, v in pairs(series) do v[#v + 1] = it[k] end
      end
   end
   for i, p in ipairs(params) do case:add('final/param/' .. p.name, p.tensor) end
   modtree.addRunningStats(case, 'final/bn/', bns)
   case:add('rng/main_after_setup', rngAfterSetup)
   case:add('rng/main_at_end', torch.getRNGState())
   for _, k in ipairs{'epoch', 'iter'} do case:add('iter/train/' .. k, torch.LongTensor(series[k])) end
   for _, k in ipairs{'loss', 'top1', 'top5', 'lr', 'param_sum_after', 'param_abs_sum_after'} do
      case:add('iter/train/' .. k, torch.DoubleTensor(series[k]))
   end

   local optimScalars = {}
   for k, v in pairs(trainer.optimState) do
      if not torch.isTensor(v) then optimScalars[k] = v end
   end
   local bnNames = {}
   for i, b in ipairs(bns) do bnNames[i] = b.name end
   local trainSizes = {}
   if opt.dataset == 'cifar10' then
      for i = 1, 5 do trainSizes[i] = math.floor(nTrain / 5) + (i <= nTrain % 5 and 1 or 0) end
   end
   local runOpt = {}
   for k, v in pairs(trainer.opt) do runOpt[k] = v end
   case.meta = {
      case = opt.name,
      command_line = 'th main.lua ' .. table.concat(mainArgs, ' '),
      main_args = mainArgs,
      opt = runOpt,
      data = {dataset = opt.dataset, ntrain = nTrain, nval = nVal, python_folder = pyFolder, python_files = pyMeta,
              train_split_sizes_over_python_files = trainSizes, data_seed_numpy_RandomState = opt.data_seed,
              t7cache_tensor = 't7cache/' .. cacheRel, t7cache_relpath = cacheRel},
      params = modtree.paramsMeta(params, {'index', 'name', 'module', 'module_type', 'field', 'shape', 'numel'}),
      bn_modules = bnNames,
      iterations = iterMeta,
      epochs = epochs,
      randperm_calls = perms,
      main_generator_states = states,
      printed_lines = printed,
      optim_state_scalars = optimScalars,
      momentum_buffer_sum = trainer.optimState.dfdx:sum(),
      momentum_buffer_abs_sum = torch.abs(trainer.optimState.dfdx):sum(),
      initial_params_exact_in_float32 = exact,
      criterion_type = torch.type(trainer.criterion),
      model_type = torch.type(trainer.model),
      param_tensor_type = torch.type(params[1].tensor),
      wall_seconds = wall,
      generator_struct = rng.STRUCT,
      python_emulation_check = 'verify_run.py re-created with torch7_rng.py the initial weights, the 4 randperms '
         .. 'of the main generator and every train and val batch input (all batches, both epochs, from the '
         .. 'python-format files) bit for bit',
      config = {net = opt.net, dataset = opt.dataset, batch = batchSize, epochs = tonumber(opt.epochs),
                seed = tonumber(opt.seed), LR = tonumber(opt.LR), precision = opt.precision,
                threads = tonumber(opt.threads), images = {train = nTrain, val = nVal}, data_seed = opt.data_seed,
                store_train = opt.store_train, store_test = opt.store_test,
                command = cmdline, environment = common.environment()},
   }
   print(json.encode(case:write(out)))
end)
