-- Golden case of Torch7's random generator (lib/TH/THRandom.c): raw words, every sampler, randperm,
-- the Box-Muller cache across calls, seed conversions and the state layout.
local common = dofile(debug.getinfo(1, 'S').source:match('^@(.*)/drivers/') .. '/lib/common.lua')
local USAGE = 'lua_rng.lua --out DIR --name CASE [--seeds 0,1,12345,2147483653] [--raw 2000] [--count 1000]'
local opt, cmdline = common.parse(arg, {
   out = {false, 'string'}, name = {false, 'string'}, gunn = {'', 'string'},
   seeds = {{0, 1, 12345, 2147483653}, 'list'}, raw = {2000, 'number'}, count = {1000, 'number'},
}, USAGE)

common.main(function()
   require 'torch'
   torch.setdefaulttensortype('torch.DoubleTensor')
   local container = require 'lib.container'
   local json = require 'lib.json'
   local rng = require 'lib.rng'
   local N, S = opt.count, math.floor(opt.count / 10)
   local S_NORMAL, S_UNIF = math.sqrt(2 / (3 * 3 * 64)), 1 / math.sqrt(27)

   local function scalars(n, f)
      return function() local r = {} for i = 1, n do r[i] = f() end return r end
   end
   local function fill(ttype, n, method, ...)
      local a = {...}
      return function() local t = torch[ttype](n); t[method](t, table.unpack(a)); return t end
   end
   -- name, call text, stored dtype, function
   local sequences = {
      {'uniform', ('torch.uniform() x%d'):format(N), 'float64', scalars(N, function() return torch.uniform() end)},
      {'uniform_ab', ('torch.uniform(-2.5, 0.75) x%d'):format(N), 'float64',
       scalars(N, function() return torch.uniform(-2.5, 0.75) end)},
      {'normal', ('torch.normal(0.5, 2.0) x%d'):format(N + 1), 'float64',
       scalars(N + 1, function() return torch.normal(0.5, 2.0) end)},
      {'normal_default', 'torch.normal() x11', 'float64', scalars(11, function() return torch.normal() end)},
      {'random_ab', ('torch.random(-3, 17) x%d'):format(N), 'int64', scalars(N, function() return torch.random(-3, 17) end)},
      {'random_b', ('torch.random(10) x%d (1..10)'):format(N), 'int64', scalars(N, function() return torch.random(10) end)},
      {'random_0_w', ('torch.random(0, 8) x%d (RandomCrop(32,4) offsets)'):format(N), 'int64',
       scalars(N, function() return torch.random(0, 8) end)},
      {'random_full', ('torch.random(0, 4294967295) x%d'):format(S), 'int64',
       scalars(S, function() return torch.random(0, 4294967295) end)},
      {'bernoulli', ('torch.bernoulli(0.3) x%d'):format(N), 'int64',
       scalars(N, function() local b = torch.bernoulli(0.3); return (b == true or b == 1) and 1 or 0 end)},
      {'double_normal', ('torch.DoubleTensor(%d):normal(0, S_NORMAL)'):format(N + 1), 'float64',
       fill('DoubleTensor', N + 1, 'normal', 0, S_NORMAL)},
      {'float_normal', ('torch.FloatTensor(%d):normal(0, S_NORMAL)'):format(N + 1), 'float32',
       fill('FloatTensor', N + 1, 'normal', 0, S_NORMAL)},
      {'double_uniform', ('torch.DoubleTensor(%d):uniform(-S_UNIF, S_UNIF)'):format(N), 'float64',
       fill('DoubleTensor', N, 'uniform', -S_UNIF, S_UNIF)},
      {'float_uniform', ('torch.FloatTensor(%d):uniform(-S_UNIF, S_UNIF)'):format(N), 'float32',
       fill('FloatTensor', N, 'uniform', -S_UNIF, S_UNIF)},
      {'float_uniform01', ('torch.FloatTensor(%d):uniform() (BN weight reset)'):format(N), 'float32',
       fill('FloatTensor', N, 'uniform')},
      {'double_bernoulli', ('torch.DoubleTensor(%d):bernoulli(0.3)'):format(N), 'float64',
       fill('DoubleTensor', N, 'bernoulli', 0.3)},
      {'double_random_ab', ('torch.DoubleTensor(%d):random(5, 9)'):format(S), 'float64',
       fill('DoubleTensor', S, 'random', 5, 9)},
      {'rand', ('torch.rand(%d) (DoubleTensor default)'):format(S), 'float64', function() return torch.rand(S) end},
      {'randn', ('torch.randn(%d) (DoubleTensor default)'):format(S + 1), 'float64', function() return torch.randn(S + 1) end},
   }
   local TYPES = {float64 = 'torch.DoubleTensor', float32 = 'torch.FloatTensor', int64 = 'torch.LongTensor'}
   local function asTensor(v, dtype)
      local t = torch.isTensor(v) and v or torch.DoubleTensor(v)
      return t:type(TYPES[dtype])
   end

   local case = container.new(opt.name)
   local meta = {case = opt.name, seeds = {}, interleave = {}, generator_struct = rng.STRUCT,
                 generator_struct_bytes = rng.BYTES,
                 constants = {S_NORMAL = S_NORMAL, S_UNIF = S_UNIF},
                 torch_random_no_args_range = '0 .. 2^32-1 (THRandom_random, the tempered MT19937 word)'}
   meta.sequences = {}
   for i, s in ipairs(sequences) do meta.sequences[i] = {name = s[1], call = s[2], dtype = s[3]} end

   -- A script of calls from one fresh seed, each with its result, words drawn and the cache flag after it.
   local function interleave(seed)
      local steps, saved = {}, nil
      local function step(call, f, isState)
         local before = rng.position(rng.now())
         local result = f()
         local after = rng.now()
         local e = {call = call, position_after = rng.position(after), normal_cached_after = after.normal_is_valid ~= 0}
         if torch.isTensor(result) then
            e.type, e.result = torch.type(result), result:totable()
         else
            e.type, e.result = 'number', {result or 0}
         end
         if not isState then e.draws = e.position_after - before end
         steps[#steps + 1] = e
      end
      torch.manualSeed(seed)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.uniform()', function() return torch.uniform() end)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.normal(3, 0.5)', function() return torch.normal(3, 0.5) end)
      step('torch.random(1, 6)', function() return torch.random(1, 6) end)
      step('torch.DoubleTensor(3):normal()', function() return torch.DoubleTensor(3):normal() end)
      step('torch.FloatTensor(2):normal(0, 0.1)', function() return torch.FloatTensor(2):normal(0, 0.1) end)
      step('torch.FloatTensor(3):normal(1, S_NORMAL)', function() return torch.FloatTensor(3):normal(1, S_NORMAL) end)
      step('torch.randperm(5)', function() return torch.randperm(5) end)
      step('torch.bernoulli(0.5)', function() local b = torch.bernoulli(0.5); return (b == true or b == 1) and 1 or 0 end)
      step('torch.FloatTensor(3):uniform()', function() return torch.FloatTensor(3):uniform() end)
      step('torch.uniform(2, 3)', function() return torch.uniform(2, 3) end)
      step('torch.random()', function() return torch.random() end)
      step('torch.normal()', function() return torch.normal() end)
      step('saved = torch.getRNGState()', function() saved = torch.getRNGState() end, true)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.uniform()', function() return torch.uniform() end)
      step('torch.setRNGState(saved)', function() torch.setRNGState(saved) end, true)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.uniform()', function() return torch.uniform() end)
      step('g = torch.Generator(); torch.manualSeed(g, 99); torch.normal(g)', function()
         local g = torch.Generator(); torch.manualSeed(g, 99); return torch.normal(g) end, true)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.normal()', function() return torch.normal() end)
      step('torch.manualSeed(seed)', function() torch.manualSeed(seed) end, true)
      step('torch.normal()', function() return torch.normal() end)
      return steps
   end

   for _, seed in ipairs(opt.seeds) do
      local label = ('s%d'):format(seed)
      torch.manualSeed(seed)
      local f = rng.now()
      meta.seeds[#meta.seeds + 1] = {label = label, seed = seed, initialSeed = torch.initialSeed(),
                                     state_after_seed = {left = f.left, next = f.next, seeded = f.seeded,
                                                         normal_is_valid = f.normal_is_valid}}
      local raw = torch.LongTensor(opt.raw)
      for i = 1, opt.raw do raw[i] = torch.random() end
      case:add('raw/' .. label, raw)
      for _, s in ipairs(sequences) do
         torch.manualSeed(seed)
         case:add(('seq/%s/%s'):format(label, s[1]), asTensor(s[4](), s[3]))
      end
      torch.manualSeed(seed)
      for _, n in ipairs{1, 2, 3, 10, 20, 72, 1000} do
         case:add(('seq/%s/randperm_%d'):format(label, n), torch.randperm(n):long())
      end
      torch.setdefaulttensortype('torch.FloatTensor')
      torch.manualSeed(seed)
      case:add(('seq/%s/randperm_float_72'):format(label), torch.randperm(72):long())
      torch.setdefaulttensortype('torch.DoubleTensor')
      meta.interleave[label] = interleave(seed)
   end

   -- Seeds outside 0..2^32-1: what manualSeed keeps and which stream it gives.
   local function first5(seed)
      torch.manualSeed(seed)
      local r = {}
      for i = 1, 5 do r[i] = torch.random() end
      return r
   end
   meta.seed_conversion = {}
   for _, seed in ipairs{-1, -2, -5, 2^32, 2^32 + 5, 2^32 + 1, 1.9, -1.9, 2^53, 2^62, 2^63, 2^64, 2^32 - 1} do
      local ok, words = pcall(first5, seed)
      local init = ok and torch.initialSeed() or nil
      meta.seed_conversion[#meta.seed_conversion + 1] = {
         seed = seed, seed_repr = ('%.17g'):format(seed), ok = ok, first5 = ok and words or nil,
         initialSeed = init, initialSeed_repr = init and ('%.17g'):format(init) or nil,
         error = not ok and tostring(words) or nil}
   end
   meta.seed_reference_first5 = {}
   for _, seed in ipairs{0, 1, 3, 4, 5, 4294967291, 4294967294, 4294967295} do
      meta.seed_reference_first5[('%d'):format(seed)] = first5(seed)
   end

   meta.tensor_naming = 'raw/<label>: the first ' .. opt.raw .. ' torch.random() values after '
      .. 'torch.manualSeed(seed); seq/<label>/<name>: meta.sequences[name].call evaluated right after a fresh '
      .. 'torch.manualSeed(seed); seq/<label>/randperm_<n>: torch.randperm(n) for n = 1, 2, 3, 10, 20, 72, 1000 '
      .. 'drawn one after another from ONE fresh seed (in that order); randperm_float_72: torch.randperm(72) with '
      .. 'FloatTensor as default type, from a fresh seed. Labels: meta.seeds.'
   meta.python_emulation_check = 'torch7_rng.py (numpy MT19937 + math.cos/sin/log/sqrt) reproduced every tensor, '
      .. 'every interleave step (result, words, cache flag) and every seed_conversion entry bit for bit'
   meta.config = {seeds = opt.seeds, raw = opt.raw, count = opt.count,
                  command = cmdline, environment = common.environment()}
   case.meta = meta
   print(json.encode(case:write(opt.out)))
end)
