-- Names of modules and parameters in a network: dotted 1-based paths through the nested .modules lists,
-- from the root module of the case ('' is the root itself), in the order of model:parameters().
local json = require 'lib.json'
local M = {}

-- Calls fn(module, path, typePath) for the root and every descendant, depth first, parents first.
function M.walk(root, fn)
   local function visit(m, path, typePath)
      fn(m, path, typePath)
      if m.modules then
         for i, child in ipairs(m.modules) do
            visit(child, path == '' and tostring(i) or (path .. '.' .. i), typePath .. '/' .. torch.type(child))
         end
      end
   end
   visit(root, '', torch.type(root))
end

local function shape(t) return json.array(t:size():totable()) end

-- Every parameter tensor in model:parameters() order: {index, name, module, module_type, type_path, field,
-- shape, numel, tensor, grad}. Checked against model:parameters() itself.
function M.params(root)
   local list = {}
   M.walk(root, function(m, path, typePath)
      if m.modules then return end
      for _, field in ipairs{'weight', 'bias'} do
         if m[field] then
            local gradField = field == 'weight' and 'gradWeight' or 'gradBias'
            list[#list + 1] = {index = #list + 1, name = path .. '.' .. field, module = path,
                               module_type = torch.type(m), type_path = typePath, field = field,
                               shape = shape(m[field]), numel = m[field]:nElement(),
                               tensor = m[field], grad = m[gradField]}
         end
      end
   end)
   local ps = root:parameters()
   assert(#ps == #list, 'parameter walk found ' .. #list .. ' tensors, parameters() ' .. #ps)
   for i, p in ipairs(ps) do assert(torch.pointer(p) == torch.pointer(list[i].tensor), 'order differs at ' .. i) end
   return list
end

-- The meta.params entries (the tensors left out), with extra fields from extra(p) if given.
function M.paramsMeta(list, keys)
   keys = keys or {'index', 'name', 'module', 'module_type', 'type_path', 'field', 'shape', 'numel'}
   local out = {}
   for i, p in ipairs(list) do
      local e = {}
      for _, k in ipairs(keys) do e[k] = p[k] end
      out[i] = e
   end
   return out
end

-- Batch normalisation modules (those with running statistics), depth first: {name, numel, type_path, module}.
function M.bns(root)
   local list = {}
   M.walk(root, function(m, path, typePath)
      if m.running_mean then
         list[#list + 1] = {name = path, numel = m.running_mean:nElement(), type_path = typePath, module = m}
      end
   end)
   return list
end

function M.bnsMeta(list)
   local out = {}
   for i, b in ipairs(list) do out[i] = {name = b.name, numel = b.numel, type_path = b.type_path} end
   return out
end

-- Adds prefix<bn>.running_mean / .running_var of every BN to the case (as_type: stored type, optional).
function M.addRunningStats(case, prefix, bns, as_type)
   for _, b in ipairs(bns) do
      case:add(prefix .. b.name .. '.running_mean', b.module.running_mean, as_type)
      case:add(prefix .. b.name .. '.running_var', b.module.running_var, as_type)
   end
end

function M.addParams(case, prefix, list, as_type, grad)
   for _, p in ipairs(list) do case:add(prefix .. p.name, grad and p.grad or p.tensor, as_type) end
end

function M.numParameters(list)
   local n = 0
   for _, p in ipairs(list) do n = n + p.numel end
   return n
end

return M
