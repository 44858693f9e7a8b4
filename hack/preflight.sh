#!/usr/bin/env bash
# Refuses to install tokenscale where another server owns a metrics API it would register: applying the
# manifests would silently take the APIService over (HPAs and ScaledObjects using the other adapter's
# metrics would break). Exit 0: free or already tokenscale's; 1: owned by someone else; 2: cannot tell.
#
#   hack/preflight.sh [--external-metrics]     the custom metrics APIServices (and the external one)
#   hack/preflight.sh --from FILE|-            the APIServices a rendered install would write: the output
#                                              of `kubectl kustomize OVERLAY` or `helm template ...`
#                                              (set NAMESPACE when the install runs outside tokenscale)
#   (KUBECTL and KUBECONFIG are honoured; NAMESPACE is where tokenscale runs or will run, default tokenscale)
set -uo pipefail
KUBECTL=${KUBECTL:-kubectl}
OWNER="${NAMESPACE:-tokenscale}/tokenscale-adapter"
apis=(v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io)
usage="usage: $0 [--external-metrics | --from FILE|-]"
case "${1:-}" in
  "") ;;
  --external-metrics) apis+=(v1beta1.external.metrics.k8s.io) ;;
  --from)
    [[ $# -eq 2 ]] || { echo "$usage" >&2; exit 2; }
    src=$2
    [[ "$src" == - ]] && src=/dev/stdin
    if ! input=$(cat -- "$src") || ! grep -q '^kind:' <<<"$input"; then
      # A failed render piped in (kustomize's error went to stderr) must not read as "nothing to check".
      echo "preflight: read no Kubernetes objects from ${2/#-/stdin}" >&2
      exit 2
    fi
    # The metadata.name of every kind: APIService document, as kubectl kustomize and helm template print them.
    if ! rendered=$(awk '
        function flush() { if (kind == "APIService") print (name == "" ? "!" : name); kind = ""; name = ""; meta = 0 }
        /^---/ { flush(); next }
        /^kind:[ \t]/ { kind = $2 }
        /^metadata:/ { meta = 1; next }
        /^[^ \t#]/ { meta = 0 }
        meta && name == "" && /^  name:[ \t]/ { name = $2; gsub(/["\047]/, "", name) }
        END { flush() }' <<<"$input"); then
      echo "preflight: cannot read $2" >&2
      exit 2
    fi
    mapfile -t apis <<<"$rendered"
    for a in "${apis[@]}"; do
      if [[ "$a" == "!" ]]; then
        # Better no answer than a pass that skipped an APIService (flow-style metadata, CRLF lines).
        echo "preflight: an APIService in ${2/#-/stdin} has no metadata.name this script can read" >&2
        exit 2
      fi
    done
    if [[ -z "${apis[*]}" ]]; then
      echo "ok: ${2/#-/stdin} registers no APIService; nothing to check"
      exit 0
    fi
    ;;
  *) echo "$usage" >&2; exit 2 ;;
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
