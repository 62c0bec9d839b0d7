-- Argo CD health of a proxy.synterix.io ProxyNode, read from the status its
-- node's agent writes (api/v1alpha1/conditions.go): not yet reported, or
-- syncing: Progressing; Degraded (a failed sync, a revision the node
-- refused): Degraded; Ready at the assigned revision: Healthy, with the
-- number of ProxyPolicies the node could not program, if any.
-- Uses only Lua's base and table libraries, as Argo CD allows.
local hs = {}

local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

-- describe returns "Reason: message" of a condition, whatever it lacks.
local function describe(c)
  local reason, message = c.reason or c.type or "", c.message or ""
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local generation = obj.metadata.generation
local revision = obj.spec.revision
if obj.status == nil or obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the agent to report revision " .. tostring(revision)
  return hs
end

local degraded = condition("Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local ready = condition("Ready")
if isTrue(ready) and obj.status.appliedRevision == revision then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  local failed = obj.status.failedPolicyCount
  if failed ~= nil and failed > 0 then
    hs.message = hs.message .. "; " .. tostring(failed) .. " ProxyPolicies not programmed"
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the agent to report Ready"
end
return hs
