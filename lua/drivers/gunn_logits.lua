-- Golden case of a GUNN model file's forward pass (GUNN's models/<net>.lua called directly, as setup()
-- does) with deterministic weights: eval-mode then training-mode logits and features, in float32 and
-- replayed in float64.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'gunn_logits.lua --gunn DIR --out DIR --name CASE [--net gunn-18] [--dataset imagenet] [--batch 2] '
   .. '[--size 224] [--seed_model 0] [--seed_data 18]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'},
   net = {'gunn-18', 'string'}, dataset = {'imagenet', 'string'}, batch = {2, 'number'}, size = {224, 'number'},
   seed_model = {0, 'number'}, seed_data = {18, 'number'},
}, USAGE)

common.main(function()
   common.setup(opt.gunn, 'torch.FloatTensor')
   torch.setdefaulttensortype('torch.FloatTensor')
   local ffi = require 'ffi'
   local container = require 'lib.container'
   local modtree = require 'lib.modtree'
   local json = require 'lib.json'
   require 'cudnn'
   local createModel = require('models/' .. opt.net)
   local netOpt = {dataset = opt.dataset, tensorType = 'torch.FloatTensor', cudnn = 'fastest'}

   -- weights: tensor k (model:parameters() order), element j (1-based) = float32(0.05 * sin(0.37 * j + k))
   local function build()
      torch.manualSeed(opt.seed_model)
      local print0 = print
      print = function() end
      local model = createModel(netOpt)
      print = print0
      for k, p in ipairs(model:parameters()) do
         assert(p:isContiguous())
         local d, n = torch.data(p), p:nElement()
         for j = 1, n do d[j - 1] = 0.05 * math.sin(0.37 * j + k) end
      end
      return model
   end
   local model = build()
   local params, bns = modtree.params(model), modtree.bns(model)
   local sums, firsts = {}, {}
   for i, p in ipairs(params) do
      sums[i] = p.tensor:double():sum()
      firsts[i] = p.tensor:view(-1)[1]
   end

   torch.manualSeed(opt.seed_data)
   local input = torch.FloatTensor(opt.batch, 3, opt.size, opt.size):normal(0, 1)
   local case = container.new(opt.name)
   case:add('input', input)

   local nMod = #model.modules
   local function passes(m, x)  -- eval mode first (running stats 0/1), then training mode
      m:evaluate()
      local t0 = os.clock()
      local r = {eval_logits = m:forward(x):clone(), eval_features = m.modules[nMod - 1].output:clone()}
      r.seconds = os.clock() - t0
      m:training()
      r.train_logits = m:forward(x):clone()
      r.train_features = m.modules[nMod - 1].output:clone()
      return r
   end
   local f64model = model:clone():double()
   local f32 = passes(model, input)
   for _, k in ipairs{'eval_logits', 'eval_features', 'train_logits', 'train_features'} do case:add(k, f32[k]) end
   local f64 = passes(f64model, input:double())
   for _, k in ipairs{'eval_logits', 'train_logits', 'eval_features', 'train_features'} do case:add('f64/' .. k, f64[k]) end

   local cmp = {}
   for _, k in ipairs{'eval_logits', 'eval_features', 'train_logits', 'train_features'} do
      cmp[k .. '_max_abs_diff'] = (f32[k]:double() - f64[k]):abs():max()
      cmp[k .. '_max_abs'] = f64[k]:clone():abs():max()
   end
   local channels = 0
   for _, b in ipairs(bns) do channels = channels + b.numel end
   case.meta = {
      case = opt.name,
      opt = netOpt,
      precision = 'float32 (torch.FloatTensor; torch.CudaTensor aliased to FloatTensor); a float64 replay is '
         .. 'summarised in meta.f64',
      seeds = {model_construction = opt.seed_model, data = opt.seed_data,
               note = 'the construction seed only affects values that the deterministic fill overwrites; input = '
                  .. 'torch.manualSeed(data) then FloatTensor(N,3,224,224):normal(0,1) (recorded)'},
      fill_formula = 'For the k-th tensor (k = 1-based index in model:parameters() order, see meta.params) with n '
         .. 'elements in row-major (C) order, element j (1-based, j = 1..n) = float32( 0.05 * sin(0.37 * j + k) ), '
         .. 'evaluated in float64 as ((0.37*j) + k) -> sin -> *0.05, then rounded to float32. numpy: j = '
         .. 'np.arange(1, n+1, dtype=np.float64); w = (0.05*np.sin(0.37*j + k)).astype(np.float32).reshape(shape). '
         .. 'Every BN running_mean = 0 and running_var = 1.',
      fill_check = {sums = sums, first_elements = firsts,
                    note = 'per-tensor float64 sum of the float32-rounded values, and the first element, in '
                       .. 'parameter order'},
      params = modtree.paramsMeta(params),
      num_parameters = modtree.numParameters(params),
      num_param_tensors = #params,
      bn_modules_count = #bns,
      bn_channels_total = channels,
      model_string = tostring(model),
      order_of_operations = 'eval-mode forward first (running stats 0/1), then training-mode forward (batch '
         .. 'statistics; this updates the running stats, which are not recorded)',
      cpu_seconds_eval_forward = f32.seconds,
      f32_vs_f64 = cmp,
      config = {net = opt.net, dataset = opt.dataset, batch = opt.batch, size = opt.size,
                seed_model = opt.seed_model, seed_data = opt.seed_data, precisions = {'float32', 'float64'},
                command = cmdline, environment = common.environment()},
   }
   print(json.encode(case:write(opt.out)))
end)
