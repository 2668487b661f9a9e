-- gunn-mini: a small network in the gunn-15 layout (not from the paper), for fast golden cases.
-- Stages of widths 32, 48, 64 with one GunnLayer of 4 segments each; the same module sequence,
-- initialisation and returned model as GUNN's models/gunn-15.lua, so that a run with the same seed draws
-- the same kinds of numbers in the same order. GunnLayer comes unmodified from GUNN's models/.
require 'nn'
require 'cunn'
require 'cudnn'
require 'models/GunnLayer'

local WIDTHS = {32, 48, 64}
local SEGMENTS = {4, 4, 4}
local STEM = 64

local function convBnRelu(model, nIn, nOut, k, pad)
   model:add(cudnn.SpatialConvolution(nIn, nOut, k, k, 1, 1, pad, pad))
   model:add(cudnn.SpatialBatchNormalization(nOut))
   model:add(cudnn.ReLU(true))
end

return function(opt)
   local model = nn.Sequential()
   convBnRelu(model, 3, STEM, 3, 1)
   local previous = STEM
   for stage = 1, #WIDTHS do
      convBnRelu(model, previous, WIDTHS[stage], 1, 0)
      if stage > 1 then model:add(cudnn.SpatialAveragePooling(2, 2)) end
      model:add(nn.GunnLayer(WIDTHS[stage], SEGMENTS[stage], opt))
      previous = WIDTHS[stage]
   end
   convBnRelu(model, previous, previous, 1, 0)
   model:add(cudnn.SpatialAveragePooling(8, 8))
   model:add(nn.Reshape(previous))
   local nClasses = ({cifar10 = 10, cifar100 = 100})[opt.dataset]
   if nClasses then model:add(nn.Linear(previous, nClasses)) end

   -- He-normal convolutions without bias (cuDNN >= 4), BN weight 1 and bias 0, Linear bias 0
   for _, conv in ipairs(model:findModules('cudnn.SpatialConvolution')) do
      conv.weight:normal(0, math.sqrt(2 / (conv.kW * conv.kH * conv.nOutputPlane)))
      if cudnn.version >= 4000 then
         conv.bias, conv.gradBias = nil, nil
      else
         conv.bias:zero()
      end
   end
   for _, bn in ipairs(model:findModules('cudnn.SpatialBatchNormalization')) do
      bn.weight:fill(1)
      bn.bias:zero()
   end
   for _, linear in ipairs(model:findModules('nn.Linear')) do linear.bias:zero() end

   model:type(opt.tensorType)
   if opt.cudnn == 'deterministic' then
      model:apply(function(m) if m.setMode then m:setMode(1, 1, 1) end end)
   end
   model:get(1).gradInput = nil

   print(model)
   local n = 0
   for _, p in ipairs(model:parameters()) do n = n + p:nElement() end
   print(string.format('| number of parameters: %d', n))
   return model
end
