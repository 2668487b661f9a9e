-- Building a GUNN network the way main.lua does: GUNN's models/init.lua setup() with an opt table.
local M = {}

-- The opt fields that models/init.lua, the model files and train.lua read.
function M.opt(netType, dataset, tensorType, extra)
   local opt = {netType = netType, dataset = dataset, tensorType = tensorType, cudnn = 'fastest', nGPU = 1,
                shareGradInput = true, optnet = false, optMemory = 0, retrain = 'none', resetClassifier = false,
                LR = 0.1, momentum = 0.9, weightDecay = 1e-4, nEpochs = 300}
   for k, v in pairs(extra or {}) do opt[k] = v end
   return opt
end

-- torch.manualSeed(seed) then models.setup(opt, nil), as main.lua does; the model file's own prints
-- (print(model), the parameter count) and shareGradInput's print(cache) are kept off stdout when quiet.
function M.setup(opt, seed, quiet)
   local models = require 'models/init'
   torch.manualSeed(seed)
   local print0 = print
   if quiet then print = function() end end
   local ok, model, criterion = pcall(models.setup, opt, nil)
   print = print0
   if not ok then error(model, 0) end
   return model, criterion
end

-- The number of classes of a dataset (the Linear layer of the model files).
M.CLASSES = {cifar10 = 10, cifar100 = 100, imagenet = 1000}
M.IMAGE_SIZE = {cifar10 = 32, cifar100 = 32, imagenet = 224}

-- A loader for Trainer:train/test holding fixed batches ({input, target}).
function M.fixedLoader(batches)
   return {
      size = function() return #batches end,
      run = function()
         local i = 0
         return function()
            i = i + 1
            if batches[i] then return i, batches[i] end
         end
      end,
   }
end

return M
