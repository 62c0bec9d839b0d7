-- Argo CD health of a proxy.synterix.io GatewayConfig, read from the
-- conditions the operator writes (api/v1alpha1/conditions.go), in kstatus's
-- order, so that Argo CD and kstatus (Flux, kubectl wait) agree:
-- not yet observed or rolling out: Progressing; Stalled: Degraded;
-- Ready (rolled out, or a revision waiting for approval): Healthy.
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

local ready = condition("Ready")
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the operator to report Ready"
end
return hs
