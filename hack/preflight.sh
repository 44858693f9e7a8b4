#!/usr/bin/env bash
# Refuses to install tokenscale where another server owns a metrics API it would register: applying the
# manifests would silently take the APIService over (HPAs and ScaledObjects using the other adapter's
# metrics would break). Exit 0: free or already tokenscale's; 1: owned by someone else; 2: cannot tell.
#
#   hack/preflight.sh [--external-metrics]     the custom metrics APIServices (and the external one)
#   hack/preflight.sh --from FILE|-            the APIServices a rendered install would write: the output
#                                              of `kubectl kustomize OVERLAY` or `helm template ...`
#                                              (each APIService is checked against the Service it names)
#   (KUBECTL and KUBECONFIG are honoured; NAMESPACE is where tokenscale runs or will run, default tokenscale,
#   for the checks without --from)
set -uo pipefail
KUBECTL=${KUBECTL:-kubectl}
OWNER="${NAMESPACE:-tokenscale}/tokenscale-adapter"
apis=(v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io)
owners=() # with --from: the Service each rendered APIService names
usage="usage: $0 [--external-metrics | --from FILE|-]"
case "${1:-}" in
  "") ;;
  --external-metrics)
    [[ $# -eq 1 ]] || { echo "$usage" >&2; exit 2; }
    apis+=(v1beta1.external.metrics.k8s.io) ;;
  --from)
    [[ $# -eq 2 ]] || { echo "$usage" >&2; exit 2; }
    src=$2
    [[ "$src" == - ]] && src=/dev/stdin
    # CRLF lines (a render saved on Windows) read as LF ones: a kind of "APIService\r" matched nothing.
    # At most 64 MiB is read (a render is kilobytes; `yes |` would grow the variable for good).
    max=$((64 << 20))
    if ! input=$(head -c $((max + 1)) -- "$src" | tr -d '\r') || ! grep -q '^kind:' <<<"$input"; then
      # A failed render piped in (kustomize's error went to stderr) must not read as "nothing to check".
      echo "preflight: read no Kubernetes objects from ${2/#-/stdin}" >&2
      exit 2
    fi
    if (( $(LC_ALL=C wc -c <<<"$input") > max )); then
      echo "preflight: ${2/#-/stdin} is larger than $max bytes; a rendered install is far smaller" >&2
      exit 2
    fi
    # The metadata.name of every kind: APIService document and the Service it names (namespace/name, "/"
    # for none), as kubectl kustomize (block style) and helm template (flow style) print them.
    if ! rendered=$(awk '
        function unq(s) { gsub(/["\047]/, "", s); return s }
        function flush() {
          if (kind == "APIService") print (name == "" ? "!" : name) " " sns "/" sname
          kind = ""; name = ""; meta = 0; spec = 0; svc = 0; sns = ""; sname = ""
        }
        /^---/ { flush(); next }
        /^kind:[ \t]/ { kind = unq($2) }
        /^metadata:/ { meta = 1; next }
        /^spec:/ { spec = 1; next }
        /^[^ \t#]/ { meta = 0; spec = 0; svc = 0 }
        meta && name == "" && /^  name:[ \t]/ { name = unq($2) }
        spec && /^  service:[ \t]*\{/ {
          if (match($0, /namespace:[ \t]*[^,} \t]+/)) { v = substr($0, RSTART, RLENGTH); sub(/namespace:[ \t]*/, "", v); sns = unq(v) }
          if (match($0, /[{, \t]name:[ \t]*[^,} \t]+/)) { v = substr($0, RSTART + 1, RLENGTH - 1); sub(/name:[ \t]*/, "", v); sname = unq(v) }
          next
        }
        spec && /^  service:[ \t]*$/ { svc = 1; next }
        spec && /^  [^ ]/ { svc = 0 }
        svc && /^    namespace:[ \t]/ { sns = unq($2) }
        svc && /^    name:[ \t]/ { sname = unq($2) }
        END { flush() }' <<<"$input"); then
      echo "preflight: cannot read $2" >&2
      exit 2
    fi
    apis=() owners=()
    while read -r a o; do
      [[ -n "$a" ]] || continue
      apis+=("$a") owners+=("$o")
    done <<<"$rendered"
    # Every APIService the render holds must have been read: one inside a kind: List, or in a flow-style
    # document, is not, and a pass that skipped it would be wrong.
    seen=$(grep -oE "kind:[[:space:]]*[\"']?APIService[\"']?[[:space:]]*([,}]|$)" <<<"$input" | wc -l)
    if (( seen != ${#apis[@]} )); then
      echo "preflight: ${2/#-/stdin} has $seen APIService objects, of which this script reads ${#apis[@]} (one in a List, or in flow style?); render it with kubectl kustomize or helm template" >&2
      exit 2
    fi
    # Checked before any loop over them: an empty array is "unbound" to set -u before bash 4.4.
    if (( ${#apis[@]} == 0 )); then
      echo "ok: ${2/#-/stdin} registers no APIService; nothing to check"
      exit 0
    fi
    for i in "${!apis[@]}"; do
      if [[ "${owners[$i]}" == "/" && "${apis[$i]}" != "!" ]]; then
        echo "preflight: the APIService ${apis[$i]} in ${2/#-/stdin} names no Service this script can read" >&2
        exit 2
      fi
    done
    for a in "${apis[@]}"; do
      if [[ "$a" == "!" ]]; then
        # Better no answer than a pass that skipped an APIService (flow-style metadata).
        echo "preflight: an APIService in ${2/#-/stdin} has no metadata.name this script can read" >&2
        exit 2
      fi
    done
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

conflicts=0
errs=$(mktemp) || exit 2
trap 'rm -f "$errs"' EXIT
for i in "${!apis[@]}"; do
  api=${apis[$i]}
  # With --from, the owner is the Service the rendered APIService names (another namespace's install of
  # tokenscale is someone else's).
  owner=${owners[$i]:-$OWNER}
  # Only stdout is compared: kubectl's warnings (an exec credential plugin's, throttling) go to stderr.
  # A bounded wait: an API server that takes the connection and never answers, or a credential plugin that
  # waits for input, must not hold the check for good.
  if ! out=$("$KUBECTL" get apiservice "$api" --request-timeout=20s -o 'jsonpath={.spec.service.namespace}/{.spec.service.name}' 2>"$errs"); then
    # This APIService's own NotFound, not any (a proxy or a wrong endpoint answers NotFound for everything).
    if grep -qF "apiservices.apiregistration.k8s.io \"$api\" not found" "$errs"; then
      echo "ok: $api is free"
      continue
    fi
    echo "preflight: cannot read APIService $api: $(cat "$errs") $out" >&2
    exit 2
  fi
  if [[ "$out" == "$owner" ]]; then
    echo "ok: $api is already served by tokenscale ($owner)"
  elif [[ "$out" == "/" ]]; then
    echo "CONFLICT: $api is served by the kube-apiserver itself; tokenscale cannot replace it." >&2
    conflicts=1
  else
    echo "CONFLICT: $api is served by $out, not $owner. Installing tokenscale would take it over and break whatever" >&2
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
