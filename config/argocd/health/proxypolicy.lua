-- Argo CD health of a proxy.synterix.io ProxyPolicy, read from the
-- conditions the operator writes (api/v1alpha1/conditions.go), in kstatus's
-- order, so that Argo CD and kstatus (Flux, kubectl wait) agree:
-- not yet observed or being programmed: Progressing; Stalled (not accepted,
-- or nodes failed to program it): Degraded; otherwise Healthy, with the
-- Programmed condition's message (such as "no node runs the targets").
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
if obj.status == nil or obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if isTrue(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local reconciling = condition("Reconciling")
if isTrue(reconciling) then
  hs.status = "Progressing"
  hs.message = reconciling.message or ""
  return hs
end

local programmed = condition("Programmed")
if programmed == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report Programmed"
  return hs
end
hs.status = "Healthy"
hs.message = describe(programmed)
return hs
