-- Golden case of the deterministic pieces of GUNN's data and training code: Trainer:learningRate,
-- the CIFAR and ImageNet val preprocessing, the Scale/CenterCrop geometry, Trainer:computeScore and
-- optim.sgd with train.lua's settings.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'extras.lua --gunn DIR --out DIR --name CASE [--lr 0.1] [--score_seed 7] [--cifar_images 2]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'},
   lr = {0.1, 'number'}, score_seed = {7, 'number'}, cifar_images = {2, 'number'},
   part = {'all', 'string'}, tmp = {'', 'string'},  -- internal: one CIFAR dataset in a sub-process
}, USAGE)

local function rawImages(n)  -- raw[n][c][y][x] = (n*53 + c*97 + y*31 + x*7) % 256, 0-based
   local raw = torch.ByteTensor(n, 3, 32, 32)
   for i = 0, n - 1 do for c = 0, 2 do for y = 0, 31 do for x = 0, 31 do
      raw[i + 1][c + 1][y + 1][x + 1] = (i * 53 + c * 97 + y * 31 + x * 7) % 256
   end end end end
   return raw
end

-- CifarDataset (datasets/<dataset>.lua) get(i) then its val preprocess, for every image.
local function cifarVal(dataset, raw)
   local Dataset = require('datasets/' .. dataset)
   local ds = Dataset({val = {data = raw, labels = torch.ByteTensor(raw:size(1)):fill(1)}}, {}, 'val')
   local pre = ds:preprocess()
   local out = torch.FloatTensor(raw:size(1), 3, 32, 32)
   for i = 1, raw:size(1) do out[i]:copy(pre(ds:get(i).input)) end
   return out
end

common.main(function()
   common.setup(opt.gunn, 'torch.FloatTensor')
   torch.setdefaulttensortype('torch.FloatTensor')
   if opt.part ~= 'all' then  -- sub-process: one CIFAR dataset file
      torch.save(opt.tmp, cifarVal(opt.part, rawImages(opt.cifar_images)))
      return
   end
   local container = require 'lib.container'
   local json = require 'lib.json'
   local image = require 'image'
   require 'paths'
   require 'optim'
   local Trainer = require 'train'
   local case = container.new(opt.name)
   local meta = {case = opt.name,
                 note = 'deterministic pieces of the original GUNN / fb.resnet.torch Lua code (no RNG involved)'}

   -- Trainer:learningRate(epoch) for epochs 1..N
   meta.lr_schedule = {}
   for _, s in ipairs{{'cifar10', 300, 300}, {'cifar100', 300, 300}, {'cifar10', 164, 164},
                      {'imagenet', 120, 150}} do
      local dataset, nEpochs, last = table.unpack(s)
      local fake = {opt = {dataset = dataset, nEpochs = nEpochs, LR = opt.lr}}
      local lr = {}
      for e = 1, last do lr[e] = Trainer.learningRate(fake, e) end
      meta.lr_schedule[dataset .. '_nEpochs' .. nEpochs] = {LR = opt.lr, dataset = dataset, nEpochs = nEpochs,
                                                           epochs = '1..' .. last, lr = lr}
   end
   meta.lr_schedule_note = 'lr[e] = Trainer:learningRate(e) for e = 1..N (1-based epochs, as main.lua passes '
      .. 'them). imagenet ignores nEpochs; listed to epoch 150.'

   -- CIFAR val preprocessing (each dataset file in its own Lua state: both register resnet.CifarDataset)
   local raw = rawImages(opt.cifar_images)
   case:add('cifar_val/raw_uint8_as_int64', raw:long())
   for _, dataset in ipairs{'cifar10', 'cifar100'} do
      local tmp = common.tmpname()
      common.spawn({'--part', dataset, '--tmp', tmp})
      case:add(dataset .. '_val/normalized', torch.load(tmp))
      os.remove(tmp)
   end
   meta.cifar_val = {
      cifar10_meanstd = {mean = {125.3, 123.0, 113.9}, std = {63.0, 62.1, 66.7}},
      cifar100_meanstd = {mean = {129.3, 124.1, 112.4}, std = {68.2, 65.4, 70.4}},
      note = 'CifarDataset:get(i) converts the uint8 image to float (0..255, not 0..1) and the val preprocess is '
         .. 'ColorNormalize: per channel x:add(-mean[c]) then x:div(std[c]) in float32',
      raw_formula = 'raw[n][c][y][x] = (n*53 + c*97 + y*31 + x*7) % 256 (0-based), uint8; stored as int64 in '
         .. 'cifar_val/raw_uint8_as_int64',
   }

   -- image.scale / image.crop calls, recorded (the real functions run)
   local calls
   local scale, crop = image.scale, image.crop
   image.scale = function(src, w, h, mode)
      local out = scale(src, w, h, mode)
      calls[#calls + 1] = {fn = 'scale', width_arg = w, height_arg = h, mode = mode,
                           allocated_h = out:size(2), allocated_w = out:size(3)}
      return out
   end
   image.crop = function(src, x1, y1, x2, y2)
      calls[#calls + 1] = {fn = 'crop', x1 = x1, y1 = y1, x2 = x2, y2 = y2}
      return crop(src, x1, y1, x2, y2)
   end

   -- ImageNet val pipeline on a formula image (ImagenetDataset needs an existing data folder)
   local dataDir = os.tmpname()
   os.remove(dataDir)
   paths.mkdir(dataDir)
   paths.mkdir(dataDir .. '/val')
   local Imagenet = require 'datasets/imagenet'
   local ds = Imagenet({val = {imagePath = torch.CharTensor(1, 1), imageClass = torch.LongTensor{1}}},
                       {data = dataDir, tenCrop = false}, 'val')
   local H, W = 256, 257
   local input = torch.FloatTensor(3, H, W)
   for c = 0, 2 do for y = 0, H - 1 do for x = 0, W - 1 do
      input[c + 1][y + 1][x + 1] = ((c * 97 + y * 31 + x * 7) % 256) / 255
   end end end
   calls = {}
   case:add('imagenet_val/output', ds:preprocess()(input))
   meta.imagenet_val = {
      image_calls = calls,
      input_formula = 'input[c][y][x] = float32( ((c*97 + y*31 + x*7) % 256) / 255 ) for c<3, y<256, x<257 '
         .. '(0-based; float64 division then rounding to float32); CHW, values in 0..1 as image.load gives',
      input_shape = {3, H, W},
      note = 'CenterCrop uses x1 = ceil((W-224)/2), y1 = ceil((H-224)/2): for W=257 that is 17 (torchvision '
         .. 'CenterCrop would use round(16.5)=16)',
      pipeline = 'ImagenetDataset:preprocess() for split val with tenCrop=false: Scale(256) (no-op here: the '
         .. 'shorter side is already 256), ColorNormalize({mean={0.485,0.456,0.406}, std={0.229,0.224,0.225}}), '
         .. 'CenterCrop(224)',
   }
   os.remove(dataDir .. '/val')
   os.remove(dataDir)

   -- Scale(256) and CenterCrop(224) geometry for assorted sizes
   local t = require 'datasets/transforms'
   local sc, cc = t.Scale(256), t.CenterCrop(224)
   meta.geometry = {}
   for _, hw in ipairs{{256, 256}, {256, 257}, {257, 256}, {256, 341}, {341, 256}, {256, 300}, {299, 256},
                       {375, 500}, {500, 375}, {333, 500}} do
      calls = {}
      local scaled = sc(torch.FloatTensor(3, hw[1], hw[2]):zero())
      local scaleCalls = calls
      calls = {}
      cc(scaled)
      meta.geometry[#meta.geometry + 1] = {input_hw = hw, scale_calls = json.array(scaleCalls),
                                           scale_result_hw = {scaled:size(2), scaled:size(3)},
                                           center_crop_input_hw = {scaled:size(2), scaled:size(3)},
                                           center_crop_calls = calls}
   end
   meta.geometry_note = 'Scale(256) passes fractional sizes (h/w*256) to image.scale, whose destination tensor '
      .. 'src.new(C, height, width) truncates them toward zero (allocated_h/allocated_w). CenterCrop(224) offsets '
      .. 'are math.ceil((W-224)/2), math.ceil((H-224)/2); image.crop(src, x1, y1, x2, y2) = src[:, y1:y2, x1:x2] '
      .. '0-based.'
   image.scale, image.crop = scale, crop

   -- Trainer:computeScore on normal logits (score_seed) and fixed targets
   torch.manualSeed(opt.score_seed)
   local single = torch.FloatTensor(4, 10):normal()
   local tencrop = torch.FloatTensor(20, 10):normal()
   local singleTarget, tencropTarget = torch.LongTensor{3, 1, 10, 5}, torch.LongTensor{4, 9}
   case:add('score/single/logits', single)
   case:add('score/single/target', singleTarget)
   case:add('score/tencrop/logits', tencrop)
   case:add('score/tencrop/target', tencropTarget)
   local s1, s5 = Trainer.computeScore(nil, single, singleTarget, 1)
   local t1, t5 = Trainer.computeScore(nil, tencrop, tencropTarget, 10)
   meta.compute_score = {
      note = 'Trainer:computeScore(output, target, nCrops) returns (top1_err, top5_err) in percent; targets 1-based',
      single = {top1_err = s1, top5_err = s5},
      tencrop = {top1_err = t1, top5_err = t5,
                 note = 'logits rows are image-major: row (i-1)*10 + k is crop k of image i; computeScore views '
                    .. 'them as (B, 10, C) and sums the raw logits over crops'},
   }

   -- optim.sgd with the state Trainer creates, on a small vector with fixed gradients
   local state = {learningRate = opt.lr, learningRateDecay = 0.0, momentum = 0.9, nesterov = true,
                  dampening = 0.0, weightDecay = 1e-4}
   meta.sgd = {state = common.copy(state),
               note = 'optim.sgd(feval, x, state) where feval returns the fixed gradient sgd/grad{i}; float64'}
   local x = torch.DoubleTensor{0.5, -1.25, 2.0, 0.0, -0.75}
   case:add('sgd/x0', x)
   local grads = {{0.1, -0.2, 0.3, -0.4, 0.5}, {-0.3, 0.1, 0.0, 0.2, -0.1}, {0.05, 0.05, -0.5, 0.25, 0.0}}
   for i, g in ipairs(grads) do
      local grad = torch.DoubleTensor(g)
      case:add('sgd/grad' .. i, grad)
      optim.sgd(function() return 0, grad:clone() end, x, state)
      case:add('sgd/x_after' .. i, x)
      case:add('sgd/momentum_buffer_after' .. i, state.dfdx)
   end

   meta.config = {lr = opt.lr, score_seed = opt.score_seed, cifar_images = opt.cifar_images,
                  command = cmdline, environment = common.environment()}
   case.meta = meta
   print(json.encode(case:write(opt.out)))
end)
