-- The compact transforms set: every transform, pipeline and decode kind of the full set, with fewer and
-- smaller inputs (the ImageNet pipelines always return 3x224x224).
local here = debug.getinfo(1, 'S').source:match('^@(.*)/[^/]*$')
local full = dofile(here .. '/transforms_full.lua')

local DROP = {
   scale_w300h451_to256 = true,  -- replaced by the smaller portrait downscale below
   cifar10_train_2 = true, cifar10_train_3 = true, cifar10_train_4 = true,
   cifar100_train_1 = true, cifar100_train_2 = true, cifar100_train_4 = true,  -- _3 is the 4-draw one
   imagenet_train_3x333x500_1 = true, imagenet_train_3x500x375_2 = true, imagenet_train_3x256x256_3 = true,
   imagenet_val_3x333x500_1 = true, imagenet_val_3x300x257_2 = true, imagenet_val_3x256x256_3 = true,
}
local cases = {}
for _, c in ipairs(full) do
   if not DROP[c.name] then cases[#cases + 1] = c end
   if c.name == 'scale_w300h451_to256' then
      cases[#cases + 1] = {name = 'scale_w60h91_to52', kind = 'transform', seed = 1008, data_seed = 1007,
                           input = 'unit', shape = {3, 91, 60}, transform = {name = 'Scale', args = {52}},
                           note = 'portrait downscale: 91/60*52 = 78.87, truncated to 78 rows'}
   end
end
return cases
