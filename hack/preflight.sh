#!/usr/bin/env bash
# Refuses to install tokenscale where another server owns a metrics API it would register: applying the
# manifests would silently take the APIService over (HPAs and ScaledObjects using the other adapter's
# metrics would break). Exit 0: free or already tokenscale's; 1: owned by someone else; 2: cannot tell.
#
#   hack/preflight.sh [--external-metrics]     (KUBECTL and KUBECONFIG are honoured; NAMESPACE is where
#                                              tokenscale runs or will run, default tokenscale)
set -uo pipefail
KUBECTL=${KUBECTL:-kubectl}
OWNER="${NAMESPACE:-tokenscale}/tokenscale-adapter"
apis=(v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io)
case "${1:-}" in
  "") ;;
  --external-metrics) apis+=(v1beta1.external.metrics.k8s.io) ;;
  *) echo "usage: $0 [--external-metrics]" >&2; exit 2 ;;
esac

conflicts=0
for api in "${apis[@]}"; do
  if ! out=$("$KUBECTL" get apiservice "$api" -o 'jsonpath={.spec.service.namespace}/{.spec.service.name}' 2>&1); then
    if grep -q NotFound <<<"$out"; then
      echo "ok: $api is free"
      continue
    fi
    echo "preflight: cannot read APIService $api: $out" >&2
    exit 2
  fi
  if [[ "$out" == "$OWNER" ]]; then
    echo "ok: $api is already served by tokenscale ($OWNER)"
  elif [[ "$out" == "/" ]]; then
    echo "CONFLICT: $api is served by the kube-apiserver itself; tokenscale cannot replace it." >&2
    conflicts=1
  else
    echo "CONFLICT: $api is served by $out. Installing tokenscale would take it over and break whatever" >&2
    echo "          reads metrics from $out. Remove that registration first if you mean to replace it, or" >&2
    echo "          keep it and install tokenscale without this API (see manifests/README.md)." >&2
    conflicts=1
  fi
done
if (( conflicts )); then
  echo "preflight: refusing; nothing was changed." >&2
  exit 1
fi
echo "preflight: ok to install"
