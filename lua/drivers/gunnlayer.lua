-- Golden case of one nn.GunnLayer (GUNN's models/GunnLayer.lua, unmodified): parameters, one training-mode
-- forward and backward, running statistics, an eval-mode forward, a finite-difference check and the
-- checkpoint written by GUNN's checkpoints.lua.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'gunnlayer.lua --gunn DIR --out DIR --name CASE [--dataset cifar10|imagenet] [--channels 16] '
   .. '[--segments 4] [--batch 3] [--size 6] [--precision double|single] [--seed_init 1234] [--seed_data 5678]'
local opt, cmdline = common.parse(arg, {
   gunn = {false, 'string'}, out = {false, 'string'}, name = {false, 'string'},
   dataset = {'cifar10', 'string'}, channels = {16, 'number'}, segments = {4, 'number'},
   batch = {3, 'number'}, size = {6, 'number'}, precision = {'double', 'string'},
   seed_init = {1234, 'number'}, seed_data = {5678, 'number'},
}, USAGE)

common.main(function()
   local ttype = ({double = 'torch.DoubleTensor', single = 'torch.FloatTensor'})[opt.precision]
      or common.die('--precision must be double or single')
   common.setup(opt.gunn, ttype)
   torch.setdefaulttensortype(ttype)
   local container = require 'lib.container'
   local modtree = require 'lib.modtree'
   local json = require 'lib.json'
   require 'paths'
   require 'models/GunnLayer'
   local checkpoints = require 'checkpoints'

   -- Construction and initialisation (seed_init): conv weights as the model files' ConvInit, then
   -- deliberately non-trivial BN values, module by module.
   torch.manualSeed(opt.seed_init)
   local layer = nn.GunnLayer(opt.channels, opt.segments, {dataset = opt.dataset})
   for _, v in ipairs(layer:findModules('cudnn.SpatialConvolution')) do
      v.weight:normal(0, math.sqrt(2 / (v.kW * v.kH * v.nOutputPlane)))
      v.bias, v.gradBias = nil, nil
   end
   for _, v in ipairs(layer:findModules('cudnn.SpatialBatchNormalization')) do
      v.weight:uniform(0.5, 1.5)
      v.bias:normal(0, 0.2)
      v.running_mean:normal(0, 0.1)
      v.running_var:uniform(0.5, 1.5)
   end
   local params = modtree.params(layer)
   local bns = modtree.bns(layer)

   torch.manualSeed(opt.seed_data)
   local shape = {opt.batch, opt.channels, opt.size, opt.size}
   local input = torch.randn(table.unpack(shape))
   local gradOutput = torch.randn(table.unpack(shape))
   local afterData = torch.getRNGState()

   local case = container.new(opt.name)
   modtree.addParams(case, 'param/', params)
   modtree.addRunningStats(case, 'bn_before/', bns)
   case:add('input', input)
   case:add('grad_output', gradOutput)

   local inputCopy = input:clone()
   layer:training()
   layer:zeroGradParameters()
   local output = layer:forward(input)
   case:add('output_train', output)
   local outputCopy = output:clone()
   modtree.addRunningStats(case, 'bn_after/', bns)
   local gradInput = layer:backward(input, gradOutput)
   case:add('grad_input', gradInput)
   modtree.addParams(case, 'grad_param/', params, nil, true)
   local facts = {
      backward_returns_gradInputContiguous = gradInput == layer.gradInputContiguous,
      layer_gradInput_field_after_direct_backward_numel = layer.gradInput:nElement(),
      input_unchanged_by_fwd_bwd = torch.equal(input, inputCopy),
      output_unchanged_by_backward = torch.equal(layer.output, outputCopy),
   }
   local gradInputValue = gradInput:clone()

   local statsBefore = {}
   for i, b in ipairs(bns) do statsBefore[i] = {b.module.running_mean:clone(), b.module.running_var:clone()} end
   layer:evaluate()
   case:add('output_eval', layer:forward(input))
   local changed = false
   for i, b in ipairs(bns) do
      changed = changed or not torch.equal(statsBefore[i][1], b.module.running_mean)
         or not torch.equal(statsBefore[i][2], b.module.running_var)
   end
   facts.eval_forward_changes_running_stats = changed

   local fields = {}
   for k, v in pairs(layer) do fields[#fields + 1] = k .. ':' .. torch.type(v) end
   table.sort(fields)

   -- The checkpoint, written by GUNN's checkpoints.lua (it saves OUT/model_best.t7 when isBestModel).
   local ckptName = opt.name .. '_checkpoint.t7'
   checkpoints.save(1, layer, {}, true, {save = opt.out})
   assert(os.rename(paths.concat(opt.out, 'model_best.t7'), paths.concat(opt.out, ckptName)))

   -- Central differences of f = sum(output .* gradOutput) in training mode along random directions
   -- (drawn right after the data), against the hand-written backward.
   layer:training()
   torch.setRNGState(afterData)
   local dInput = torch.randn(input:size())
   local flat = layer:getParameters()
   local dParams = torch.randn(flat:size())
   local h = 1e-6
   local function f(x) return torch.cmul(layer:forward(x), gradOutput):sum() end
   local inputFd = (f(input + dInput * h) - f(input - dInput * h)) / (2 * h)
   local inputAnalytic = torch.cmul(gradInputValue, dInput):sum()
   local flat0 = flat:clone()
   flat:add(h, dParams)
   local fPlus = f(input)
   flat:add(-2 * h, dParams)
   local fMinus = f(input)
   flat:copy(flat0)
   local paramsFd = (fPlus - fMinus) / (2 * h)
   local paramsAnalytic, offset = 0, 0
   for _, p in ipairs(params) do
      local g = case.values['grad_param/' .. p.name][1]
      paramsAnalytic = paramsAnalytic + torch.cmul(g, dParams:narrow(1, offset + 1, p.numel):viewAs(g)):sum()
      offset = offset + p.numel
   end

   local precisionText = opt.precision == 'double'
      and 'float64 (torch.DoubleTensor; torch.CudaTensor aliased to DoubleTensor)'
      or 'float32 (torch.FloatTensor; torch.CudaTensor aliased to FloatTensor)'
   local meta = {
      case = opt.name,
      constructor = string.format("nn.GunnLayer(%d, %d, {dataset='%s'})", opt.channels, opt.segments, opt.dataset),
      precision = precisionText,
      seeds = {layer_init = opt.seed_init, data = opt.seed_data},
      init = 'conv weights ~ N(0, sqrt(2/(kW*kH*nOutputPlane))) and conv bias removed (as models/gunn-*.lua '
         .. 'ConvInit with cudnn.version>=4000); BN weight ~ U(0.5,1.5), BN bias ~ N(0,0.2), running_mean ~ '
         .. 'N(0,0.1), running_var ~ U(0.5,1.5); all values recorded, so no RNG needs reproducing',
      params = modtree.paramsMeta(params),
      num_parameters = modtree.numParameters(params),
      num_param_tensors = #params,
      bn_modules = modtree.bnsMeta(bns),
      bn_momentum = bns[1].module.momentum,
      bn_eps = bns[1].module.eps,
      model_string = tostring(layer),
      finite_difference_check = {
         input_analytic = inputAnalytic, input_fd = inputFd,
         input_rel_err = math.abs(inputAnalytic - inputFd) / math.abs(inputAnalytic),
         params_analytic = paramsAnalytic, params_fd = paramsFd,
         params_rel_err = math.abs(paramsAnalytic - paramsFd) / math.abs(paramsAnalytic),
         note = 'directional derivatives of sum(output .* grad_output) in training mode, step 1e-6, '
            .. (opt.precision == 'double' and 'float64' or 'float32'),
      },
      checkpoint_file = ckptName,
      checkpoint_note = 'written with the original checkpoints.lua (deepCopy(model):float():clearState(), '
         .. 'torch.save binary) right after the eval-mode forward above; a float32 nn.GunnLayer whose '
         .. 'clearState() leaves the work buffers inputContiguous, gradInputContiguous, sharedGradInput, '
         .. 'inputTable (views into the last input) and outputTable in the file',
      gunnlayer_fields_in_memory = fields,
      config = {dataset = opt.dataset, channels = opt.channels, segments = opt.segments, batch = opt.batch,
                size = opt.size, precision = opt.precision, seed_init = opt.seed_init,
                seed_data = opt.seed_data, command = cmdline, environment = common.environment()},
   }
   for k, v in pairs(facts) do meta[k] = v end
   case.meta = meta
   local files = case:write(opt.out)
   files[#files + 1] = ckptName
   print(json.encode(files))
end)
