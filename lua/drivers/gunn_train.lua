-- Golden case of a whole GUNN network built by GUNN's models/init.lua setup(): initial parameters, one
-- training-mode forward/backward, and a few SGD steps of GUNN's Trainer:train, in float32 and in float64
-- from the same initial values and data; plus the initial model written by GUNN's checkpoints.lua.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'gunn_train.lua --gunn DIR --out DIR --name CASE [--net gunn-15] [--dataset cifar10] [--batch 4] '
   .. '[--steps 3] [--seed_model 0] [--seed_data 2018] [--nEpochs 300] [--LR 0.1] [--share_check true]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'},
   net = {'gunn-15', 'string'}, dataset = {'cifar10', 'string'}, batch = {4, 'number'}, steps = {3, 'number'},
   seed_model = {0, 'number'}, seed_data = {2018, 'number'}, nEpochs = {300, 'number'}, LR = {0.1, 'number'},
   share_check = {true, 'bool'},
}, USAGE)

common.main(function()
   common.setup(opt.gunn, 'torch.FloatTensor')
   torch.setdefaulttensortype('torch.FloatTensor')  -- as main.lua
   local container = require 'lib.container'
   local modtree = require 'lib.modtree'
   local gunnnet = require 'lib.gunnnet'
   local json = require 'lib.json'
   require 'paths'
   local optim = require 'optim'
   local Trainer = require 'train'
   local checkpoints = require 'checkpoints'
   local nClasses = gunnnet.CLASSES[opt.dataset] or common.die('unknown dataset ' .. opt.dataset)
   local size = gunnnet.IMAGE_SIZE[opt.dataset]
   local function netOpt(tensorType, share)
      return gunnnet.opt(opt.net, opt.dataset, tensorType,
                         {shareGradInput = share, LR = opt.LR, nEpochs = opt.nEpochs})
   end

   -- data: the steps' batches (normal images, uniform labels), then the eval batch
   torch.manualSeed(opt.seed_data)
   local batches = {}
   for i = 1, opt.steps do
      local input = torch.randn(opt.batch, 3, size, size)
      local target = torch.LongTensor(opt.batch):random(1, nClasses)
      batches[i] = {input = input, target = target}
   end
   local evalInput = torch.randn(opt.batch, 3, size, size)

   local case = container.new(opt.name)
   local model0 = gunnnet.setup(netOpt('torch.FloatTensor', true), opt.seed_model, true)
   local params0 = modtree.params(model0)
   local bns0 = modtree.bns(model0)
   modtree.addParams(case, 'init/param/', params0)
   case:add('input', batches[1].input)
   case:add('target', batches[1].target)
   for i, b in ipairs(batches) do
      case:add(('train/batch%d/input'):format(i), b.input)
      case:add(('train/batch%d/target'):format(i), b.target)
   end
   case:add('eval_input', evalInput)

   -- the initial model through GUNN's checkpoints.lua (gradient buffers zeroed: a deterministic file)
   model0:zeroGradParameters()
   local initFile = opt.name .. '_init.t7'
   checkpoints.save(0, model0, {}, true, {save = opt.out})
   assert(os.rename(paths.concat(opt.out, 'model_best.t7'), paths.concat(opt.out, initFile)))

   local function sumAbs(t) return torch.abs(t):sum() end

   -- One precision: eval logits of the fresh model, one forward/backward, then Trainer:train steps.
   local function experiment(tensorType, share)
      local ttype = torch.getconstructortable(tensorType)
      local r = {}
      local model, criterion = gunnnet.setup(netOpt(tensorType, share), opt.seed_model, true)
      local params, bns = modtree.params(model), modtree.bns(model)
      model:evaluate()
      r.init_eval_logits = model:forward(evalInput:type(tensorType)):clone()
      model:training()
      local first = model:get(1)
      r.first_conv_gradInput_is_nil = first.gradInput == nil
      first.gradInput = ttype()  -- d loss / d input for this pass only
      local x = batches[1].input:type(tensorType)
      r.logits = model:forward(x):clone()
      r.loss = criterion:forward(model.output, batches[1].target)
      model:zeroGradParameters()
      r.grad_logits = criterion:backward(model.output, batches[1].target):clone()
      r.grad_input = model:backward(x, criterion.gradInput):clone()
      first.gradInput = nil
      r.grad_params = {}
      for i, p in ipairs(params) do r.grad_params[i] = p.grad:clone() end
      r.bn_fwd = {}
      for i, b in ipairs(bns) do r.bn_fwd[i] = {b.module.running_mean:clone(), b.module.running_var:clone()} end

      -- the steps, on a fresh model with the same initial values
      model, criterion = gunnnet.setup(netOpt(tensorType, share), opt.seed_model, true)
      params, bns = modtree.params(model), modtree.bns(model)
      local trainer = Trainer(model, criterion, netOpt(tensorType, share), nil)
      local steps, sgd = {}, optim.sgd
      optim.sgd = function(feval, x, state)
         local loss = criterion.output
         local a, b = sgd(feval, x, state)
         steps[#steps + 1] = {loss = loss, param_sum = x:sum(), param_abs_sum = sumAbs(x),
                              sgd_direction_abs_sum = sumAbs(trainer.gradParams),
                              momentum_buffer_sum = state.dfdx:sum(), momentum_buffer_abs_sum = sumAbs(state.dfdx),
                              learning_rate = state.learningRate}
         return a, b
      end
      local print0 = print
      print = function() end
      local top1, top5, avgLoss = trainer:train(1, gunnnet.fixedLoader(batches))
      print = print0
      optim.sgd = sgd
      r.train = {steps = steps, top1_err = top1, top5_err = top5, avg_loss = avgLoss,
                 optim_state = {}}
      for k, v in pairs(trainer.optimState) do
         if type(v) ~= 'userdata' and not torch.isTensor(v) then r.train.optim_state[k] = v end
      end
      r.params_after = {}
      for i, p in ipairs(params) do r.params_after[i] = p.tensor:clone() end
      r.bn_after = {}
      for i, b in ipairs(bns) do r.bn_after[i] = {b.module.running_mean:clone(), b.module.running_var:clone()} end
      model:evaluate()
      r.eval_logits_after = model:forward(evalInput:type(tensorType)):clone()
      r.params, r.bns = params, bns
      return r
   end

   local function maxAbsDiff(a, b) return (a:double() - b:double()):abs():max() end
   local function addBn(prefix, bns, values)
      for i, b in ipairs(bns) do
         case:add(prefix .. b.name .. '.running_mean', values[i][1])
         case:add(prefix .. b.name .. '.running_var', values[i][2])
      end
   end
   local after = ('after%d'):format(opt.steps)

   local f32 = experiment('torch.FloatTensor', true)
   case:add('f32/init/eval_logits', f32.init_eval_logits)
   case:add('f32/fwd/logits', f32.logits)
   case:add('f32/fwd/grad_logits', f32.grad_logits)
   case:add('f32/fwd/grad_input', f32.grad_input)
   addBn('f32/fwd/bn/', f32.bns, f32.bn_fwd)
   addBn('f32/train/' .. after .. '/bn/', f32.bns, f32.bn_after)
   case:add('f32/train/' .. after .. '/eval_logits', f32.eval_logits_after)

   local f64 = experiment('torch.DoubleTensor', true)
   case:add('f64/init/eval_logits', f64.init_eval_logits)
   case:add('f64/fwd/logits', f64.logits)
   case:add('f64/fwd/grad_logits', f64.grad_logits)
   case:add('f64/fwd/grad_input', f64.grad_input)
   for i, p in ipairs(f64.params) do case:add('f64/fwd/grad_param/' .. p.name, f64.grad_params[i], 'torch.FloatTensor') end
   addBn('f64/fwd/bn/', f64.bns, f64.bn_fwd)
   for i, p in ipairs(f64.params) do
      case:add('f64/train/' .. after .. '/param/' .. p.name, f64.params_after[i], 'torch.FloatTensor')
   end
   addBn('f64/train/' .. after .. '/bn/', f64.bns, f64.bn_after)
   case:add('f64/train/' .. after .. '/eval_logits', f64.eval_logits_after)

   local note = ('%s iterations of the original Trainer:train(epoch=1) over train/batch1..%d. steps[i].loss = '
      .. 'criterion.output of step i (before that step\'s update); the *_sum fields are taken after the optim.sgd '
      .. 'update of step i; sgd_direction_abs_sum = sum|gradParams| after optim.sgd modified it in place (grad + '
      .. 'wd*param + momentum*buf, nesterov).'):format(({'one', 'two', 'three', 'four', 'five'})[opt.steps]
      or tostring(opt.steps), opt.steps)
   local function runMeta(r, precision)
      local t = r.train
      return {fwd_loss = r.loss, train = {steps = t.steps, top1_err = t.top1_err, top5_err = t.top5_err,
                                            avg_loss = t.avg_loss, optim_state = t.optim_state,
                                            precision = precision, note = note}}
   end

   local perTensor, worstRel, paramsAfter = {}, 0, 0
   for i, p in ipairs(f64.params) do
      local d, m = maxAbsDiff(f32.grad_params[i], f64.grad_params[i]), f64.grad_params[i]:clone():abs():max()
      local rel = m > 0 and d / m or 0
      perTensor[i] = {name = p.name, max_abs_diff = d, max_abs_f64 = m, rel_to_absmax = rel}
      if m > 1e-10 then worstRel = math.max(worstRel, rel) end  -- not the zero-gradient BN biases
      paramsAfter = math.max(paramsAfter, maxAbsDiff(f32.params_after[i], f64.params_after[i]))
   end
   local trainLoss = {}
   for i = 1, opt.steps do trainLoss[i] = math.abs(f32.train.steps[i].loss - f64.train.steps[i].loss) end

   local meta = {
      case = opt.name,
      opt = netOpt('torch.FloatTensor', true),
      seeds = {model_init = opt.seed_model, data = opt.seed_data,
               note = 'torch.manualSeed(data) then, in order: train batch1 input (normal 0,1) and target (random '
                  .. '1..' .. nClasses .. '), batch2, batch3, eval_input; torch.manualSeed(model_init) immediately '
                  .. 'before every models.setup (as main.lua with -manualSeed ' .. opt.seed_model .. '). Values are '
                  .. 'all recorded; no RNG needs reproducing.'},
      labels = ('targets are 1-based Lua class indices (1..%d); subtract 1 for PyTorch'):format(nClasses),
      layout = 'all image tensors NCHW; conv weights (out, in, kH, kW); linear weight (out, in)',
      params = modtree.paramsMeta(params0),
      num_parameters = modtree.numParameters(params0),
      num_param_tensors = #params0,
      bn_modules = modtree.bnsMeta(bns0),
      model_string = tostring(model0),
      first_conv_gradInput_is_nil = f32.first_conv_gradInput_is_nil,
      f32 = runMeta(f32, 'float32'),
      f64 = runMeta(f64, 'float64'),
      f32_vs_f64 = {
         note = 'differences between the float32 and float64 Torch7 runs of identical code/initial values/data',
         logits_max_abs_diff = maxAbsDiff(f32.logits, f64.logits),
         loss_abs_diff = math.abs(f32.loss - f64.loss),
         grad_input_max_abs_diff = maxAbsDiff(f32.grad_input, f64.grad_input),
         grad_input_max_abs_f64 = f64.grad_input:clone():abs():max(),
         grad_param_per_tensor = perTensor,
         grad_param_worst_rel_to_absmax = worstRel,
         train_loss_abs_diff = trainLoss,
         ['params_' .. after .. '_max_abs_diff'] = paramsAfter,
         ['eval_logits_' .. after .. '_max_abs_diff'] = maxAbsDiff(f32.eval_logits_after, f64.eval_logits_after),
      },
   }
   meta.opt.tensorType = 'torch.FloatTensor'

   if opt.share_check then  -- the float32 experiment again without shared gradInput buffers
      local ns = experiment('torch.FloatTensor', false)
      local gp, pa, losses = 0, 0, {}
      for i = 1, #ns.params do
         gp = math.max(gp, maxAbsDiff(ns.grad_params[i], f32.grad_params[i]))
         pa = math.max(pa, maxAbsDiff(ns.params_after[i], f32.params_after[i]))
      end
      for i = 1, opt.steps do losses[i] = math.abs(ns.train.steps[i].loss - f32.train.steps[i].loss) end
      meta.share_grad_input_check = {
         note = 'the float32 experiment was repeated with opt.shareGradInput=false; max abs differences to the '
            .. 'shareGradInput=true run (0 = bit-identical)',
         logits = maxAbsDiff(ns.logits, f32.logits), grad_input = maxAbsDiff(ns.grad_input, f32.grad_input),
         grad_params = gp, losses = losses, ['params_' .. after] = pa,
         ['eval_logits_' .. after] = maxAbsDiff(ns.eval_logits_after, f32.eval_logits_after),
      }
   end
   meta.config = {net = opt.net, dataset = opt.dataset, batch = opt.batch, steps = opt.steps,
                  seed_model = opt.seed_model, seed_data = opt.seed_data, nEpochs = opt.nEpochs, LR = opt.LR,
                  precisions = {'float32', 'float64'}, share_check = opt.share_check,
                  command = cmdline, environment = common.environment()}
   case.meta = meta
   local files = case:write(opt.out)
   files[#files + 1] = initFile
   print(json.encode(files))
end)
