package converter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// fakeKubelet serves the PodResources API on a unix socket, as the kubelet does.
type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	pods []*podresourcesv1.PodResources
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: f.pods}, nil
}

func servePodResources(t *testing.T, pods ...*podresourcesv1.PodResources) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(s, &fakeKubelet{pods: pods})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return sock
}

type readerFunc func([]string) ([]GPUReading, error)

func (f readerFunc) Read(u []string) ([]GPUReading, error) { return f(u) }

func TestHeadroomThroughPodResources(t *testing.T) {
	sock := servePodResources(t,
		&podresourcesv1.PodResources{Name: "decode-0", Namespace: "llm-d", Containers: []*podresourcesv1.ContainerResources{
			{Name: "vllm", Devices: []*podresourcesv1.ContainerDevices{
				{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-aaa", "GPU-bbb"}},
				{ResourceName: "rdma/hca", DeviceIds: []string{"mlx5_0"}},
			}},
		}},
		&podresourcesv1.PodResources{Name: "cpu-only", Namespace: "llm-d", Containers: []*podresourcesv1.ContainerResources{{Name: "c"}}},
	)
	pr, err := DialPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pr.Timeout = time.Minute // a hang guard: the 5 s default could end a loaded machine's first connect
	var asked []string
	free := map[string]uint64{"GPU-aaa": 30 << 30, "GPU-bbb": 1 << 30}
	h := &Headroom{Devices: pr, Need: Need{MinFreeBytes: 2 << 30}, ReadTimeout: time.Minute, GPUs: readerFunc(func(u []string) ([]GPUReading, error) {
		asked = u
		var out []GPUReading
		for _, id := range u {
			out = append(out, GPUReading{UUID: id, MemTotal: 80 << 30, MemFree: free[id], UtilisationKnown: true})
		}
		return out, nil
	})}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "llm-d"}}
	}
	ok, reason, detail := h.Check(context.Background(), pod("decode-0"))
	if ok || reason != protocol.ReasonMemoryShort || !strings.Contains(detail, "GPU-bbb") || strings.Join(asked, ",") != "GPU-aaa,GPU-bbb" {
		t.Errorf("one short GPU: %v %s %q (asked NVML for %v)", ok, reason, detail, asked)
	}
	free["GPU-bbb"] = 10 << 30
	if ok, reason, detail := h.Check(context.Background(), pod("decode-0")); !ok {
		t.Errorf("enough on both: refused %s %s", reason, detail)
	}
	if ok, reason, _ := h.Check(context.Background(), pod("cpu-only")); ok || reason != protocol.ReasonNoGPUs {
		t.Errorf("a pod without GPUs: %v %s", ok, reason)
	}
	if ok, reason, detail := h.Check(context.Background(), pod("elsewhere")); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, "no pod llm-d/elsewhere") {
		t.Errorf("a pod the kubelet does not know: %v %s %q", ok, reason, detail)
	}
	// Runs: the pods the kubelet lists, with devices or without; the namespace counts.
	for _, c := range []struct {
		ns, name string
		want     bool
	}{{"llm-d", "decode-0", true}, {"llm-d", "cpu-only", true}, {"llm-d", "elsewhere", false}, {"other", "decode-0", false}} {
		if runs, err := pr.Runs(context.Background(), c.ns, c.name); err != nil || runs != c.want {
			t.Errorf("Runs(%s/%s) = %v, %v; want %v", c.ns, c.name, runs, err, c.want)
		}
	}
	pr.Close()
	if _, err := pr.Runs(context.Background(), "llm-d", "decode-0"); err == nil {
		t.Error("Runs on a closed connection: no error")
	}
}

// Memory is judged on every GPU before utilisation: a converted decoder's first GPU is busy by design,
// and the recheck, which tolerates busy, must still see a second GPU run out of memory. Zero thresholds
// mean zero (only idle GPUs), not the flags' defaults.
func TestDecideJudgesMemoryBeforeUtilisation(t *testing.T) {
	busy := GPUReading{UUID: "GPU-a", MemTotal: 80 << 30, MemFree: 20 << 30, Utilisation: 100, UtilisationKnown: true}
	short := GPUReading{UUID: "GPU-b", MemTotal: 80 << 30, MemFree: 1 << 30, Utilisation: 10, UtilisationKnown: true}
	need := Need{MinFreeBytes: 2 << 30, MaxUtilisation: 90}
	if ok, reason, detail := Decide([]GPUReading{busy, short}, need); ok || reason != protocol.ReasonMemoryShort || !strings.Contains(detail, "GPU-b") {
		t.Errorf("busy GPU-a, GPU-b short of memory: %v %s %q; want memory-short on GPU-b", ok, reason, detail)
	}
	half := GPUReading{UUID: "GPU-c", MemTotal: 80 << 30, MemFree: 20 << 30, Utilisation: 50, UtilisationKnown: true}
	if ok, reason, _ := Decide([]GPUReading{half}, Need{MaxUtilisation: 0}); ok || reason != protocol.ReasonBusy {
		t.Errorf("--max-utilisation 0 and a GPU at 50%%: %v %s; want busy", ok, reason)
	}
	low := GPUReading{UUID: "GPU-d", MemTotal: 80 << 30, MemFree: 1 << 20, UtilisationKnown: true}
	if ok, reason, detail := Decide([]GPUReading{low}, Need{MinFreeBytes: 0, MaxUtilisation: 90}); !ok {
		t.Errorf("--min-free-gib 0: refused %s %s", reason, detail)
	}
}

// A reading no GPU can give would pass the checks it feeds, so whatever reader gave it, it is an
// nvml-error naming the GPU: no memory total, more free than total, or no utilisation outside MIG.
func TestDecideDistrustsImplausibleReadings(t *testing.T) {
	need := Need{MinFreeBytes: 2 << 30, MaxUtilisation: 90}
	for name, g := range map[string]GPUReading{
		"no total":                      {UUID: "GPU-a", MemFree: 20 << 30, UtilisationKnown: true},
		"more free than total":          {UUID: "GPU-a", MemTotal: 80 << 30, MemFree: 81 << 30, UtilisationKnown: true},
		"no utilisation on a whole GPU": {UUID: "GPU-a", MemTotal: 80 << 30, MemFree: 20 << 30},
		"over 100% utilised":            {UUID: "GPU-a", MemTotal: 80 << 30, MemFree: 20 << 30, Utilisation: math.MaxUint32, UtilisationKnown: true},
	} {
		if ok, reason, detail := Decide([]GPUReading{g}, need); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, "GPU-a") {
			t.Errorf("%s: %v %s %q; want nvml-error naming GPU-a", name, ok, reason, detail)
		}
	}
	mig := GPUReading{UUID: "MIG-b", MemTotal: 40 << 30, MemFree: 20 << 30, MIG: true}
	if ok, reason, detail := Decide([]GPUReading{mig}, need); !ok {
		t.Errorf("a MIG device without utilisation: refused %s %s", reason, detail)
	}
}

// A reading that cannot be true is refused and reported unknown (its series dropped), never observed: the
// agent's gauges would serve 4,294,967,295% utilisation as a ratio of 42,949,673.
func TestHeadroomDropsImplausibleReadings(t *testing.T) {
	sock := servePodResources(t, &podresourcesv1.PodResources{Name: "decode-0", Namespace: "llm-d", Containers: []*podresourcesv1.ContainerResources{{
		Name: "vllm", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-aaa", "GPU-bbb"}}},
	}}})
	pr, err := DialPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pr.Timeout = time.Minute // a hang guard: the 5 s default could end a loaded machine's first connect
	h := &Headroom{Devices: pr, Need: Need{MinFreeBytes: 1 << 30, MaxUtilisation: 90}, ReadTimeout: time.Minute,
		GPUs: readerFunc(func(u []string) ([]GPUReading, error) {
			return []GPUReading{
				{UUID: "GPU-aaa", MemTotal: 80 << 30, MemFree: 30 << 30, UtilisationKnown: true, Utilisation: 10},
				{UUID: "GPU-bbb", MemTotal: 80 << 30, MemFree: 30 << 30, UtilisationKnown: true, Utilisation: math.MaxUint32},
			}, nil
		})}
	var observed, unknown []string
	h.Observe = func(g GPUReading) { observed = append(observed, g.UUID) }
	h.Unknown = func(u string) { unknown = append(unknown, u) }
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "decode-0", Namespace: "llm-d"}}
	if ok, reason, detail := h.Check(context.Background(), pod); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, "GPU-bbb") {
		t.Errorf("%v %s %q; want nvml-error naming GPU-bbb", ok, reason, detail)
	}
	if strings.Join(observed, ",") != "GPU-aaa" || strings.Join(unknown, ",") != "GPU-bbb" {
		t.Errorf("observed %v, unknown %v; want GPU-aaa observed and GPU-bbb unknown", observed, unknown)
	}
}

// A hung NVML read is an nvml-error after ReadTimeout, and while it hangs later checks fail at once
// instead of piling up behind it; once it returns, checks read again.
func TestHeadroomHungNVMLRead(t *testing.T) {
	sock := servePodResources(t, &podresourcesv1.PodResources{Name: "decode-0", Namespace: "llm-d", Containers: []*podresourcesv1.ContainerResources{{
		Name: "vllm", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-aaa"}}},
	}}})
	pr, err := DialPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pr.Timeout = time.Minute // a hang guard: the 5 s default could end a loaded machine's first connect
	release := make(chan struct{})
	var reads atomic.Int32
	h := &Headroom{Devices: pr, Need: Need{MinFreeBytes: 1 << 30, MaxUtilisation: 90}, ReadTimeout: 20 * time.Millisecond,
		GPUs: readerFunc(func(u []string) ([]GPUReading, error) {
			if reads.Add(1) == 1 {
				<-release
			}
			return []GPUReading{{UUID: u[0], MemTotal: 80 << 30, MemFree: 30 << 30, UtilisationKnown: true}}, nil
		})}
	var unknown []string
	h.Unknown = func(u string) { unknown = append(unknown, u) }
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "decode-0", Namespace: "llm-d"}}
	if ok, reason, detail := h.Check(context.Background(), pod); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, "did not answer within") {
		t.Fatalf("hung read: %v %s %q; want nvml-error naming the timeout", ok, reason, detail)
	}
	if strings.Join(unknown, ",") != "GPU-aaa" {
		t.Errorf("GPUs reported unknown after the failed read: %v; want GPU-aaa (its metrics series dropped)", unknown)
	}
	if ok, reason, detail := h.Check(context.Background(), pod); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, "has not returned yet") || reads.Load() != 1 {
		t.Fatalf("while it hangs: %v %s %q, %d reads; want an immediate nvml-error and no second read", ok, reason, detail, reads.Load())
	}
	close(release)
	// Reads that answer must not time out however slow the machine; the deadline is a hang guard.
	h.ReadTimeout = time.Minute
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, reason, detail := h.Check(context.Background(), pod)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the read returned: still %s %q", reason, detail)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Time-sliced GPUs are named <uuid>::<n> by the NVIDIA device plugin; NVML knows only the UUID.
func TestGPUUUIDsOfSharedReplicas(t *testing.T) {
	got := gpuUUIDs([]string{"GPU-a::0", "GPU-a::3", "MIG-b", "nvidia.com/other", "GPU-c", "GPU-" + strings.Repeat("x", 64<<10), "GPU-\x1b[2J", "MIG-GPU-d/1/0"})
	if strings.Join(got, ",") != "GPU-a,MIG-b,GPU-c,MIG-GPU-d/1/0" {
		t.Errorf("got %.200q; want GPU-a, MIG-b, GPU-c, MIG-GPU-d/1/0 (a 64 KiB name, or one with a terminal escape, is no UUID)", got)
	}
}

func TestSGLangActuator(t *testing.T) {
	var got []string
	idle := true
	message := "scheduler is not idle; drain first"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			NewRole string `json:"new_role"`
		}
		if r.URL.Path != "/pd_role_switch" || r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got = append(got, req.NewRole)
		if !idle {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "message": message})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "message": "ok", "old_role": "decode", "new_role": req.NewRole})
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	host, portStr, _ := net.SplitHostPort(u.Host)
	port, _ := strconv.Atoi(portStr)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"}, Status: corev1.PodStatus{PodIP: host}}
	a := &SGLangActuator{Port: port, Timeout: time.Minute} // the default 5 s is not what is tested here
	if err := a.Convert(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if err := a.Revert(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "prefill,decode" {
		t.Errorf("roles asked: %v", got)
	}
	idle = false
	if err := a.Convert(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "not idle") {
		t.Errorf("a busy engine's refusal: %v", err)
	}
	// The engine's words are repeated in the error (and the agent's log) only in part.
	message = strings.Repeat("m", 60<<10)
	if err := a.Convert(context.Background(), pod); err == nil || len(err.Error()) > 1000 {
		t.Errorf("a refusal with a 60 KiB message: an error of %d bytes, want under 1,000", len(fmt.Sprint(err)))
	}
	// ... quoted, so that a newline or a terminal escape in them reaches neither the log nor the status raw.
	message = "not idle\n\x1b[31mFAKE LOG LINE\r" + strings.Repeat("é", 150)
	if err := a.Convert(context.Background(), pod); err == nil || strings.ContainsAny(err.Error(), "\n\r\x1b") || !utf8.ValidString(err.Error()) {
		t.Errorf("a refusal with a newline and an escape: %q; want them quoted, and valid UTF-8 where it is cut", err)
	}
	if err := a.Convert(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}}); err == nil {
		t.Error("a pod without an IP converted")
	}
	// A pod on its node's network has its node's IP: the call could reach another engine of the node.
	asked := len(got)
	hostNet := pod.DeepCopy()
	hostNet.Spec.HostNetwork = true
	if err := a.Convert(context.Background(), hostNet); err == nil || !strings.Contains(err.Error(), "node's network") || len(got) != asked {
		t.Errorf("a host-network pod: %v, %d calls; want a refusal without a call", err, len(got)-asked)
	}
	// The switch goes to the pod, not through a proxy from the agent's environment.
	if directTransport.Proxy != nil {
		t.Error("the actuator's transport uses a proxy")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The engine's answer is taken as it comes: a redirect is a failure naming the pod, not followed with the
// POST re-sent wherever the engine points, whatever client the actuator is given. A flip is bounded well
// inside the agent's 20 s shutdown budget.
func TestSGLangActuatorFollowsNoRedirectAndTimesOutSoon(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "new_role": "prefill"})
	}))
	defer target.Close()
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/pd_role_switch", http.StatusTemporaryRedirect)
	}))
	defer engine.Close()
	u, _ := url.Parse(engine.URL)
	host, portStr, _ := net.SplitHostPort(u.Host)
	port, _ := strconv.Atoi(portStr)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"}, Status: corev1.PodStatus{PodIP: host}}
	// A minute each: the requests' speed on a loaded machine is not what is tested here.
	for name, a := range map[string]*SGLangActuator{
		"its own client":       {Port: port, Timeout: time.Minute},
		"a client it is given": {Port: port, Timeout: time.Minute, HTTP: &http.Client{}},
	} {
		if err := a.Convert(context.Background(), pod); err == nil || !strings.Contains(err.Error(), "ns/d") || !strings.Contains(err.Error(), "redirect") {
			t.Errorf("%s: a redirecting engine: %v; want an error naming the pod and the redirect", name, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
	var deadline time.Time
	var bounded bool
	answer := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		deadline, bounded = r.Context().Deadline()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(`{"success": true}`)), Request: r}, nil
	})
	if err := (&SGLangActuator{HTTP: &http.Client{Transport: answer}}).Convert(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// The deadline was set before Convert returned, so with a 5 s limit it is at most 5 s after that.
	if after := time.Until(deadline); !bounded || after > 5*time.Second {
		t.Errorf("a flip's deadline is %s after it returned (bounded %v); want at most 5s", after, bounded)
	}
}

type devicesFunc func() []string

func (f devicesFunc) Devices(context.Context, string, string) ([]string, error) { return f(), nil }

// GPUs the kubelet names by index or device name (deviceIDStrategy: index, GKE's nvidia0) cannot be read
// by UUID: an nvml-error saying so, not a refusal for a pod with no GPU, which was false.
func TestHeadroomNamesGPUsItCannotRead(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "decode-0", Namespace: "llm-d"}}
	read := readerFunc(func(u []string) ([]GPUReading, error) { t.Errorf("NVML read for %v", u); return nil, nil })
	for _, ids := range [][]string{{"nvidia0"}, {"0", "1"}} {
		h := &Headroom{Devices: devicesFunc(func() []string { return ids }), Need: Need{MinFreeBytes: 1 << 30}, GPUs: read}
		if ok, reason, detail := h.Check(context.Background(), pod); ok || reason != protocol.ReasonNVMLError || !strings.Contains(detail, ids[0]) || !strings.Contains(detail, "not by UUID") {
			t.Errorf("GPUs %v: %v %s %q; want an nvml-error naming them", ids, ok, reason, detail)
		}
	}
	h := &Headroom{Devices: devicesFunc(func() []string { return nil }), Need: Need{MinFreeBytes: 1 << 30}, GPUs: read}
	if ok, reason, _ := h.Check(context.Background(), pod); ok || reason != protocol.ReasonNoGPUs {
		t.Errorf("no GPU: %v %s; want %s", ok, reason, protocol.ReasonNoGPUs)
	}
}
