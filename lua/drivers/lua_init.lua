-- Golden case of the initial weights that main.lua's setup draws from Torch7's generator: GUNN's opts.lua
-- parses the command line, then torch.manualSeed(seed) and GUNN's models/init.lua setup(opt, nil), as
-- main.lua does; every constructor and fill is observed (module order, words drawn).
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'lua_init.lua --gunn DIR --out DIR --name CASE [--seed 7] [--cifar_net gunn-15] [--cifar_dataset cifar10] '
   .. '[--imagenet_net gunn-18] [--work DIR]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'}, seed = {'7', 'string'},
   cifar_net = {'gunn-15', 'string'}, cifar_dataset = {'cifar10', 'string'}, imagenet_net = {'gunn-18', 'string'},
   work = {'', 'string'},
}, USAGE)

-- the classes whose construction is listed (nn.SpatialMaxPooling, which draws nothing, is not: as in the
-- reference data)
local CLASSES = {'nn.Sequential', 'nn.ConcatTable', 'nn.CAddTable', 'nn.GunnLayer', 'nn.Reshape', 'nn.Linear',
                 'cudnn.SpatialConvolution', 'cudnn.SpatialBatchNormalization',
                 'cudnn.ReLU', 'cudnn.SpatialAveragePooling', 'cudnn.SpatialMaxPooling'}

common.main(function()
   local ffi = require 'ffi'
   ffi.cdef 'int chdir(const char *path);'
   local function absolute(p)
      if p:sub(1, 1) == '/' then return p end
      local h = io.popen('pwd'); local cwd = h:read('*l'); h:close()
      return cwd .. '/' .. p
   end
   local gunn, out = absolute(opt.gunn), absolute(opt.out)
   -- opts.parse creates its -save folder and needs an ImageNet folder with train/: a scratch folder
   local work = opt.work ~= '' and absolute(opt.work) or os.tmpname()
   os.remove(work)
   os.execute("mkdir -p '" .. work .. "/IMAGENET_DIR/train'")
   assert(ffi.C.chdir(work) == 0)

   common.setup(gunn, 'torch.FloatTensor')
   torch.setdefaulttensortype('torch.FloatTensor')  -- as main.lua
   torch.setnumthreads(1)
   local container = require 'lib.container'
   local modtree = require 'lib.modtree'
   local drawlog = require 'lib.drawlog'
   local rng = require 'lib.rng'
   local sha256 = require 'lib.sha256'
   local numsum = require 'lib.numsum'
   local json = require 'lib.json'
   local gunnnet = require 'lib.gunnnet'
   require 'paths'
   require 'cudnn'
   require 'models/GunnLayer'
   local opts = require 'opts'
   local models = require 'models/init'
   local OPT_KEYS = {'netType', 'dataset', 'precision', 'nGPU', 'manualSeed', 'tensorType', 'cudnn',
                     'shareGradInput', 'optnet', 'optMemory'}

   -- One setup() under observation: (model, criterion, log, opt, args).
   local function observedSetup(args)
      local o = opts.parse(args)
      local modules, stack, fills, total = {}, {}, {}, 0
      local removeFills = drawlog.watchFills({'torch.FloatTensor', 'torch.DoubleTensor'}, function(t, what, n, words)
         total = total + words
         local owner = stack[#stack]
         if owner then
            owner.words = owner.words + words
            if not owner.module.modules then
               owner.fills[#owner.fills + 1] = {what = what, numel = n, words = words}
            end
            for i = #stack - 1, 1, -1 do stack[i].words = stack[i].words + words end
         else  -- the model file's init loop: find the module (its tensors are replaced by model:type later)
            local found
            for _, rec in ipairs(modules) do
               for _, field in ipairs{'weight', 'bias'} do
                  if rec.module[field] == t then found = {rec, field} end
               end
            end
            fills[#fills + 1] = {owner = found or error('init-loop fill of an unknown tensor'), what = what,
                                 numel = n, words = words}
         end
      end)
      local removeInits = drawlog.watchConstructors(CLASSES, function(m)
         local rec = {module = m, index = #modules + 1, words = 0, fills = {}}
         modules[#modules + 1] = rec
         stack[#stack + 1] = rec
      end, function() stack[#stack] = nil end)
      torch.manualSeed(tonumber(o.manualSeed))
      local print0 = print
      print = function() end
      local ok, model, criterion = pcall(models.setup, o, nil)
      print = print0
      removeFills()
      removeInits()
      if not ok then error(model, 0) end
      return model, criterion, {modules = modules, fills = fills, total = total}, o
   end

   -- The construction and init-loop records of one setup, as meta.
   local function describe(model, log)
      local where = {}
      modtree.walk(model, function(m, path) where[m] = path end)
      local inLoop, loopFills = {}, {}
      for i, f in ipairs(log.fills) do
         local rec, field = f.owner[1], f.owner[2]
         inLoop[rec] = (inLoop[rec] or 0) + f.words
         loopFills[i] = {call_index = i, class = torch.type(rec.module), path = where[rec.module], field = field,
                         numel = f.numel, what = f.what, words = f.words}
      end
      local constructed = {}
      for _, rec in ipairs(log.modules) do
         if where[rec.module] then
            local e = {construction_index = #constructed + 1, class = torch.type(rec.module),
                       path = where[rec.module], leaf = rec.module.modules == nil,
                       words_at_construction = rec.words}
            if e.leaf then
               e.construction_fills = json.array(rec.fills)
               e.words_in_init_loop = inLoop[rec] or 0
            end
            constructed[#constructed + 1] = e
         end
      end
      return constructed, loopFills
   end

   local function optMeta(o)
      local m = {}
      for _, k in ipairs(OPT_KEYS) do m[k] = o[k] end
      return m
   end
   local function argsFor(net, dataset, precision, extra)
      local a = {'-netType', net, '-dataset', dataset, '-precision', precision, '-nGPU', '1', '-manualSeed', opt.seed}
      for _, v in ipairs(extra or {}) do a[#a + 1] = v end
      return a
   end

   local case = container.new(opt.name)
   local meta = {case = opt.name, seed = tonumber(opt.seed), generator_struct = rng.STRUCT}

   -- one network's setup under observation, as meta (+ its parameters, the generator state, the logs)
   local function slot(net, dataset, extraArgs, shownArgs)
      local args = argsFor(net, dataset, 'single', extraArgs)
      local model, criterion, log, o = observedSetup(args)
      local stateAfter = torch.getRNGState()
      local f = rng.fields(stateAfter)
      local params = modtree.params(model)
      local constructed, loopFills = describe(model, log)
      local m = {
         params = modtree.paramsMeta(params, {'index', 'name', 'module', 'module_type', 'field', 'shape', 'numel'}),
         num_parameters = modtree.numParameters(params),
         total_words_setup = log.total,
         rng_after_setup = {left = f.left, next = f.next, normal_is_valid = f.normal_is_valid},
         opt = optMeta(o),
         command_line = argsFor(net, dataset, 'single', shownArgs),
         default_tensor_type = torch.getdefaulttensortype(),
         param_tensor_type = torch.type(params[1].tensor),
         model_string = tostring(model),
         criterion = torch.type(criterion),
         modules_in_construction_order = constructed,
         init_loop_fills = loopFills,
      }
      for i, p in ipairs(params) do m.params[i].tensor_type = torch.type(p.tensor) end
      assert((log.total - f.next) % 624 == 0, 'word count does not match the generator state')
      return m, params, stateAfter, log, constructed, loopFills
   end

   -- the CIFAR network ('gunn15' slot): float32 values stored, the float64 run checked against them
   local cifarMeta, cifarParams, cifarState, _, cifarConstructed, cifarLoop =
      slot(opt.cifar_net, opt.cifar_dataset, {}, {})
   for _, p in ipairs(cifarParams) do case:add('gunn15/param/' .. p.name, p.tensor) end
   case:add('gunn15/rng_state_after_setup', cifarState)
   cifarMeta.param_sha256_float32_le = {}
   for i, p in ipairs(cifarParams) do cifarMeta.param_sha256_float32_le[i] = sha256.tensor(p.tensor) end

   local dargs = argsFor(opt.cifar_net, opt.cifar_dataset, 'double')
   local dmodel, _, dlog, dopt = observedSetup(dargs)
   local dparams = modtree.params(dmodel)
   local same, hashes = true, {}
   for i, p in ipairs(dparams) do
      hashes[i] = sha256.tensor(p.tensor)
      same = same and torch.equal(p.tensor, cifarParams[i].tensor:double())
   end
   local dConstructed, dLoop = describe(dmodel, dlog)
   local sameWords = #dConstructed == #cifarConstructed and #dLoop == #cifarLoop
   for i, e in ipairs(dConstructed) do sameWords = sameWords and e.words_at_construction == cifarConstructed[i].words_at_construction end
   for i, e in ipairs(dLoop) do sameWords = sameWords and e.words == cifarLoop[i].words end
   cifarMeta.float64_run = {opt = optMeta(dopt), command_line = dargs, param_tensor_type = torch.type(dparams[1].tensor),
                            total_words_setup = dlog.total, identical_to_float32_values_cast_to_double = same,
                            param_sha256_float64_le = hashes,
                            construction_and_init_words_identical_to_float32_run = sameWords}
   meta.gunn15 = cifarMeta
   dmodel, dparams = nil, nil
   collectgarbage()

   -- the ImageNet network ('gunn18' slot): checksums only
   local imMeta, imParams, imState = slot(opt.imagenet_net, 'imagenet', {'-data', work .. '/IMAGENET_DIR'},
                                           {'-data', 'IMAGENET_DIR'})
   case:add('gunn18/rng_state_after_setup', imState)
   imMeta.param_checksums = {}
   for i, p in ipairs(imParams) do
      local t, flat = p.tensor, p.tensor:view(-1)
      local first5 = {}
      for j = 1, math.min(5, flat:nElement()) do first5[j] = flat[j] end
      imMeta.param_checksums[i] = {name = p.name, dtype = 'float32', sha256_le_bytes = sha256.tensor(t),
                                   sum_float64 = numsum.sum(t), abs_sum_float64 = numsum.sum(t, true),
                                   first5 = first5, min = t:min(), max = t:max()}
   end
   meta.gunn18 = imMeta
   meta.python_emulation_check = 'torch7_rng.py + verify_init.py re-created all gunn-15 (float32 and float64 runs) '
      .. 'and all gunn-18 parameter tensors bit for bit, the per-module word counts, and the generator state after setup'
   meta.config = {seed = tonumber(opt.seed), cifar_net = opt.cifar_net, cifar_dataset = opt.cifar_dataset,
                  imagenet_net = opt.imagenet_net, precisions = {'single', 'double'},
                  command = cmdline, environment = common.environment()}
   case.meta = meta
   assert(ffi.C.chdir(out) == 0)
   os.execute("rm -rf '" .. work .. "'")
   print(json.encode(case:write(out)))
end)
