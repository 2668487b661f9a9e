-- CPU stand-in for cudnn.torch: real Torch classes registered under the cudnn names, computing with the nn
-- modules they inherit from. What matters for parity with a GPU run of the GUNN code:
--  * cudnn.version >= 4000, so the model files drop every convolution bias;
--  * the constructors draw from the generator exactly what cudnn.torch's draw (a convolution: its weight
--    then its bias, once; a batch normalisation: its weight), so the initial weights of a seeded run match;
--  * the pooling classes default the stride to the kernel size (nn defaults it to 1);
--  * print(model) gives cudnn.torch's text (batch normalisation and ReLU as bare type names).
require 'nn'
require 'cunn'

local cudnn = rawget(_G, 'cudnn') or {}
_G.cudnn = cudnn
if cudnn.standin then return cudnn end
cudnn.standin = true
cudnn.version = 7000
cudnn.fastest = false
cudnn.benchmark = false
function cudnn.setMode() end
function cudnn.resetMode() end

local function noModes(class)
   function class:setMode() return self end
   function class:resetMode() return self end
   function class:fastest() return self end
end

-- Convolution: nn's constructor with its reset switched off, weights re-created as (out, in/groups, kH, kW),
-- then one reset (nn's: weight then bias uniform in +-1/sqrt(kW*kH*nIn)), as cudnn.torch does.
local Conv, convParent = torch.class('cudnn.SpatialConvolution', 'nn.SpatialConvolution')
function Conv:__init(nInputPlane, nOutputPlane, kW, kH, dW, dH, padW, padH, groups)
   self.reset = function() end
   convParent.__init(self, nInputPlane, nOutputPlane, kW, kH, dW, dH)
   self.reset = nil
   self.padW = padW or 0
   self.padH = padH or 0
   self.groups = groups or 1
   assert(nInputPlane % self.groups == 0, 'nInputPlane should be divisible by nGroups')
   assert(nOutputPlane % self.groups == 0, 'nOutputPlane should be divisible by nGroups')
   self.weight = torch.Tensor(nOutputPlane, nInputPlane / self.groups, kH, kW)
   self.gradWeight = torch.Tensor(nOutputPlane, nInputPlane / self.groups, kH, kW)
   self:reset()
end
noModes(Conv)

-- Batch normalisation: nn's constructor already draws what cudnn.torch's does (weight uniform in [0, 1)).
local BN = torch.class('cudnn.SpatialBatchNormalization', 'nn.SpatialBatchNormalization')
function BN:__tostring__() return torch.type(self) end

local ReLU = torch.class('cudnn.ReLU', 'nn.ReLU')
function ReLU:__tostring__() return torch.type(self) end
noModes(ReLU)

local AvgPool, avgParent = torch.class('cudnn.SpatialAveragePooling', 'nn.SpatialAveragePooling')
function AvgPool:__init(kW, kH, dW, dH, padW, padH)
   avgParent.__init(self, kW, kH, dW or kW, dH or kH, padW, padH)
end
noModes(AvgPool)

local MaxPool, maxParent = torch.class('cudnn.SpatialMaxPooling', 'nn.SpatialMaxPooling')
function MaxPool:__init(kW, kH, dW, dH, padW, padH)
   maxParent.__init(self, kW, kH, dW or kW, dH or kH, padW, padH)
end
noModes(MaxPool)

return cudnn
