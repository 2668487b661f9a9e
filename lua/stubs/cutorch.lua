-- CPU stand-in for cutorch (no GPU): the Cuda tensor and storage names point at CPU classes so that the
-- unmodified GUNN code runs. torch.CudaTensor is the run's CPU type: the global CUDA_STANDIN_TYPE
-- ('torch.FloatTensor' or 'torch.DoubleTensor', set by the driver before the first require), FloatTensor
-- when unset.
require 'torch'

local cpu = rawget(_G, 'CUDA_STANDIN_TYPE') or 'torch.FloatTensor'
local cpuName = cpu:match('torch%.(%a+)Tensor')
assert(cpuName == 'Float' or cpuName == 'Double', 'CUDA_STANDIN_TYPE must be torch.FloatTensor or torch.DoubleTensor')

torch.CudaTensor = torch[cpuName .. 'Tensor']
torch.CudaStorage = torch[cpuName .. 'Storage']
torch.CudaDoubleTensor = torch.DoubleTensor
torch.CudaDoubleStorage = torch.DoubleStorage
torch.CudaLongTensor = torch.LongTensor
torch.CudaLongStorage = torch.LongStorage

local cutorch = {standin = true, cpuType = cpu}
-- the Cuda type names that model:type() / criterion:type() may be given, and what they stand for
cutorch.typeMap = {
   ['torch.CudaTensor'] = cpu,
   ['torch.CudaDoubleTensor'] = 'torch.DoubleTensor',
   ['torch.CudaLongTensor'] = 'torch.LongTensor',
}
function cutorch.manualSeed() end
function cutorch.manualSeedAll() end
function cutorch.synchronize() end
function cutorch.setDevice() end
function cutorch.getDevice() return 1 end
function cutorch.getDeviceCount() return 1 end
function cutorch.createCudaHostTensor(...) return torch[cpuName .. 'Tensor'](...) end
function cutorch.createCudaHostDoubleTensor(...) return torch.DoubleTensor(...) end

_G.cutorch = cutorch
return cutorch
