-- Argo CD health check for eveflow.dev/EvePipeline.
-- Install it under argocd-cm as resource.customizations.health.eveflow.dev_EvePipeline
-- (see docs/kubernetes.md). Argo CD runs it with the live object in `obj`.
--
--   no status yet / observedGeneration behind generation / Ready missing or Unknown  -> Progressing
--   Ready=False with a reason the user must fix (InvalidSpec, auth/rejected)           -> Degraded
--   spec.suspend: true (and observed)                                                -> Suspended
--   Ready=True for the current generation                                            -> Healthy
--   Ready=False for anything transient (PrefectUnavailable, worker starting, ...)    -> Progressing

-- Reasons that will not clear by waiting: the spec or the credentials must change.
-- Plain base-library Lua only: Argo CD runs argocd-cm scripts without the string library.
local userErrorReasons = {
  InvalidSpec = true,
  PrefectAuthError = true,
  PrefectAuthFailed = true,
  PrefectRejected = true,
  SecretNotFound = true,
}

local function isUserError(reason)
  if reason == nil then
    return false
  end
  return userErrorReasons[reason] == true
end

local function describe(condition)
  local text = condition.reason or "NoReason"
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the eveflow operator to reconcile this pipeline"
  return hs
end

local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end

local observed = status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (last observed: " .. tostring(observed or "none") .. ")"
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if ready.status == "False" and isUserError(ready.reason) then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: schedules paused and worker scaled to 0 (set spec.suspend: false to resume)"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  if ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "Ready"
  end
  return hs
end

hs.status = "Progressing"
if ready.status == "False" then
  hs.message = "Not ready yet, the operator retries: " .. describe(ready)
else
  hs.message = "Readiness unknown: " .. describe(ready)
end
return hs
