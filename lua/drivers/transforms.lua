-- Golden case of GUNN's data pipeline: the transforms of datasets/transforms.lua, the preprocess() of the
-- CIFAR and ImageNet dataset classes, and ImagenetDataset:_loadImage on image files, with every random
-- draw and image-package call the Lua made recorded.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'transforms.lua --gunn DIR --out DIR --name CASE --cases SPEC.lua --files DIR [--set NAME] [--build TEXT]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'}, cases = {false, 'string'},
   files = {'', 'string'}, set = {'custom', 'string'}, build = {'', 'string'},
   group = {'', 'string'}, tmp = {'', 'string'},  -- internal: one group of cases in a sub-process
}, USAGE)

local INPUT_RANGE = {unit = 'uint8 k/255 in [0, 1] (image.load style)', byte = 'uint8 values as float, 0..255',
                     norm = 'uniform float in [-2, 2)'}
local CIFAR_RANGE = 'CifarDataset:get(1).input: the uint8 image (tensor raw) as float, 0..255'
local PIPELINES = {
   cifar_train = 'Compose{ColorNormalize(meanstd), HorizontalFlip(0.5), RandomCrop(32, 4), Jigsaw()}',
   cifar_val = 'ColorNormalize(meanstd)',
   imagenet_train = 'Compose{RandomSizedCrop(224), ColorJitter{brightness=0.4, contrast=0.4, saturation=0.4}, '
      .. 'Lighting(0.1, pca.eigval, pca.eigvec), ColorNormalize(meanstd), HorizontalFlip(0.5)}',
   imagenet_val = 'Compose{Scale(256), ColorNormalize(meanstd), CenterCrop(224)}',
}
local LOAD_CALL = 'ImagenetDataset:_loadImage(path): image.load(path, 3, "float"), on error image.decompress(bytes, 3, "float")'

local function groupOf(spec)
   if spec.kind == 'transform' then return 'transforms' end
   if spec.kind == 'pipeline' then return spec.dataset end
   return 'decode'
end

common.main(function()
   common.setup(opt.gunn, 'torch.FloatTensor')
   torch.setdefaulttensortype('torch.DoubleTensor')  -- a fresh Lua state's default, as in the loader threads
   local json = require 'lib.json'
   local observe = require 'lib.observe'
   local image = require 'image'
   require 'paths'
   local t = require 'datasets/transforms'
   local specs = dofile(opt.cases)

   local function makeInput(kind, shape)
      if kind == 'norm' then return torch.FloatTensor(table.unpack(shape)):uniform(-2, 2) end
      local b = torch.ByteTensor(table.unpack(shape)):random(0, 255)
      if kind == 'byte' then return b:float() end
      return b:float():mul(1 / 255)
   end
   -- a transform from its constructor call {name, args}
   local function build(spec)
      local a = spec.args
      if spec.name == 'Compose' or spec.name == 'RandomOrder' then
         local ts = {}
         for i, s in ipairs(a[1]) do ts[i] = build(s) end
         return t[spec.name](ts)
      elseif spec.name == 'Lighting' then
         return t.Lighting(a[1], torch.Tensor(a[2]), torch.Tensor(a[3]))
      end
      return t[spec.name](table.unpack(a))
   end
   local function asMeta(v)  -- constructor arguments as meta (tables keep their JSON kind)
      if type(v) ~= 'table' then return v end
      local c = {}
      for k, x in pairs(v) do c[k] = asMeta(x) end
      local mt = getmetatable(v)
      if mt and mt.__json then return setmetatable(c, {__json = mt.__json}) end
      if next(v) == nil then return json.array(c) end
      return c
   end
   local dataDir = os.tmpname()
   os.remove(dataDir)
   for _, split in ipairs{'train', 'val'} do paths.mkdir(dataDir) paths.mkdir(dataDir .. '/' .. split) end
   local imagenet
   local function imagenetDataset(split)
      imagenet = imagenet or require 'datasets/imagenet'
      return imagenet({[split] = {imagePath = torch.CharTensor(1, 1), imageClass = torch.LongTensor{1}}},
                      {data = dataDir, tenCrop = false}, split)
   end

   -- runs f(input) observed; returns output and the facts about in-place behaviour
   local function observed(f, input, seed)
      local before = input:clone()
      torch.manualSeed(seed)
      observe.start(image)
      local output = f(input)
      local draws, calls = observe.stop()
      local m = {draws = draws, image_calls = calls, output_type = torch.type(output),
                 input_modified_in_place = not torch.equal(before, input),
                 output_is_input = torch.pointer(output) == torch.pointer(input),
                 output_shares_input_storage = output:storage() ~= nil and input:storage() ~= nil
                    and torch.pointer(output:storage()) == torch.pointer(input:storage()),
                 input_min = before:min(), input_max = before:max()}
      return output:clone(), before, m
   end

   local function runCase(spec)
      local name, tensors = spec.name, {}
      local function add(key, v) tensors[#tensors + 1] = {name .. '/' .. key, v} end
      local m = {kind = spec.kind, group = groupOf(spec), note = spec.note}
      for k, v in pairs(spec.extra or {}) do m[k] = v end
      if spec.kind == 'transform' then
         torch.manualSeed(spec.data_seed)
         local input = makeInput(spec.input, spec.shape)
         local output, before, facts = observed(build(spec.transform), input, spec.seed)
         if spec.extra and spec.extra.compare_region == 'all_but_last_row' then
            output:select(output:dim() - 1, output:size(output:dim() - 1)):zero()  -- undefined memory there
         end
         add('input', before)
         add('output', output)
         for k, v in pairs(facts) do m[k] = v end
         m.seed, m.data_seed, m.input_kind, m.input_range = spec.seed, spec.data_seed, spec.input, INPUT_RANGE[spec.input]
         m.transform = asMeta(spec.transform)
      elseif spec.kind == 'pipeline' then
         local ds, input
         torch.manualSeed(spec.data_seed)
         if spec.dataset == 'imagenet' then
            input = makeInput('unit', spec.shape)
            ds = imagenetDataset(spec.split)
            m.input_kind, m.input_range, m.tenCrop = 'unit', INPUT_RANGE.unit, false
            m.pipeline = PIPELINES['imagenet_' .. spec.split]
         else
            local raw = torch.ByteTensor(3, 32, 32):random(0, 255)
            local Dataset = require('datasets/' .. spec.dataset)
            ds = Dataset({[spec.split] = {data = raw:view(1, 3, 32, 32), labels = torch.ByteTensor{1}}}, {}, spec.split)
            input = ds:get(1).input
            add('raw', raw)
            m.input_range, m.pipeline = CIFAR_RANGE, PIPELINES['cifar_' .. spec.split]
         end
         local output, before, facts = observed(ds:preprocess(), input, spec.seed)
         add('input', before)
         add('output', output)
         for k, v in pairs(facts) do m[k] = v end
         m.dataset, m.split, m.seed, m.data_seed = spec.dataset, spec.split, spec.seed, spec.data_seed
      else  -- decode: the loader of the training data on a file
         local path = opt.files .. '/' .. spec.file_name
         local f = io.open(path, 'rb') or error('missing image file ' .. path)
         local bytes = f:read('*a')
         f:close()
         local b = torch.ByteTensor(#bytes)
         require('ffi').copy(torch.data(b), bytes, #bytes)
         add('file', b)
         local decompress, usedFallback = image.decompress, false
         image.decompress = function(...) usedFallback = true; return decompress(...) end
         local ok, out = pcall(function() return imagenetDataset('val'):_loadImage(path) end)
         image.decompress = decompress
         local okLoad, errLoad = pcall(image.load, path, 3, 'float')
         local function clean(msg)  -- error positions without the install prefix, messages without colours
            return (tostring(msg):gsub('\27%[[%d;]*m', ''):gsub('[^%s]*/share/lua/5%.1/', '')
               :gsub('[^%s]*/lua/([%w_]+/)', '%1'))
         end
         m.call, m.description, m.file_name, m.loader_ok, m.image_load_ok = LOAD_CALL, spec.description,
            spec.file_name, ok, okLoad
         if not okLoad then m.image_load_error = clean(errLoad) end
         if ok then
            add('output', out)
            m.loader_used_fallback, m.output_min, m.output_max, m.output_type = usedFallback, out:min(), out:max(),
               torch.type(out)
         else
            m.error = clean(out)
         end
         if spec.informational_reason then m.informational, m.informational_reason = true, spec.informational_reason end
      end
      m.tensors = {}
      for i, x in ipairs(tensors) do m.tensors[i] = x[1] end
      return {tensors = tensors, meta = m}
   end

   local function runGroup(group)
      local results = {}
      for _, spec in ipairs(specs) do
         if groupOf(spec) == group then results[spec.name] = runCase(spec) end
      end
      return results
   end

   if opt.group ~= '' then  -- sub-process
      torch.save(opt.tmp, runGroup(opt.group))
      os.execute("rm -rf '" .. dataDir .. "'")
      return
   end
   -- both CIFAR dataset files register resnet.CifarDataset: each CIFAR group in its own Lua state
   local results, done = {}, {}
   for _, spec in ipairs(specs) do
      local g = groupOf(spec)
      if not done[g] then
         done[g] = true
         local part
         if g == 'cifar10' or g == 'cifar100' then
            local tmp = os.tmpname()
            common.spawn({'--group', g, '--tmp', tmp})
            part = torch.load(tmp)
            os.remove(tmp)
         else
            part = runGroup(g)
         end
         for k, v in pairs(part) do results[k] = v end
      end
   end
   os.execute("rm -rf '" .. dataDir .. "'")

   local container = require 'lib.container'
   local case = container.new(opt.name)
   local order, cases = {}, {}
   for i, spec in ipairs(specs) do
      local r = results[spec.name]
      order[i] = spec.name
      for _, x in ipairs(r.tensors) do case:add(x[1], x[2]) end
      cases[spec.name] = r.meta
   end
   case.meta = {
      case = opt.name, set = opt.set, case_order = order, cases = cases, torch_threads = torch.getnumthreads(),
      build = opt.build,
      source = 'joe-siyuan-qiao/GUNN 7e7aa93: datasets/transforms.lua and the preprocess() of datasets/cifar10.lua, '
         .. 'datasets/cifar100.lua, datasets/imagenet.lua, loaded unmodified; decode cases call '
         .. 'ImagenetDataset:_loadImage of datasets/imagenet.lua',
      default_tensor_type = 'torch.DoubleTensor (the default of a fresh Lua state, as in the threads of '
         .. 'dataloader.lua, which never call setdefaulttensortype); images are FloatTensors',
      dtypes = 'float32, uint8 (uint8 is new in this file: raw bytes, 1 byte per element)',
      tensor_naming = '<case>/input float32 (the tensor handed to the transform, as it was before the call), '
         .. '<case>/output float32 (what the transform returned), <case>/raw uint8 [3,32,32] (CIFAR pipelines: the '
         .. 'stored uint8 image whose CifarDataset:get() gives input), <case>/file uint8 [nbytes] (decode cases: the '
         .. 'encoded image file, byte for byte)',
      draw_log_format = 'meta.cases[case].draws: every random draw the Lua made while the transform/pipeline ran, in '
         .. 'call order, each {fn, args, result[, type, size]}. fn "torch.uniform": args [] (meaning a=0, b=1) or [a, b], '
         .. 'result the double returned (u*(b-a)+a, u = 32-bit Mersenne-Twister draw / 2^32). fn "torch.random": args '
         .. '[a, b], result the integer in [a, b]. fn "torch.randperm": args [n], result the permutation as 1-based '
         .. 'integers (a DoubleTensor in Lua). fn "Tensor:normal": a tensor method filling the tensor in place, args '
         .. '[mean, std], result the filled values in row-major order, type the tensor type, size its shape. Nothing '
         .. 'else (math.random, Tensor:uniform/bernoulli/random on float/double/byte/long tensors, torch.normal, '
         .. 'torch.rand, torch.randn, torch.bernoulli, ...) was called while the cases ran, although all of them were '
         .. 'wrapped and would have been logged.',
      config = {cases = opt.cases:match('[^/]*$'), files = opt.files ~= '' and 'given' or 'none', set = opt.set,
                command = cmdline, environment = common.environment()},
   }
   print(json.encode(case:write(opt.out)))
end)
