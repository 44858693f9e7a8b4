package converter

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/component-base/metrics"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/tokenscale/tokenscale/converter/protocol"
	"github.com/tokenscale/tokenscale/internal/options"
)

// gpuSession answers every read with the same readings, one per UUID asked for.
type gpuSession struct{ free uint64 }

func (g gpuSession) Read(uuids []string) ([]GPUReading, error) {
	var out []GPUReading
	for _, u := range uuids {
		out = append(out, GPUReading{UUID: u, MemTotal: 80 << 30, MemFree: g.free, UtilisationKnown: true, Utilisation: 10})
	}
	return out, nil
}
func (gpuSession) Close() error { return nil }

// parseAgent parses an agent command line as the binary does.
func parseAgent(t *testing.T, args ...string) (*AgentCommand, error) {
	t.Helper()
	cmd := options.New("tokenscale-converter agent")
	c := &AgentCommand{}
	c.AddFlags(cmd, "")
	return c, cmd.Parse(args, &bytes.Buffer{})
}

// The agent's command line, wired by Build, flips a leased pod with the actuator and the headroom rule
// the flags name, through the kubelet's PodResources API and the GPU library.
func TestAgentCommandWiresTheFlags(t *testing.T) {
	sock := servePodResources(t, &podresourcesv1.PodResources{Name: "d1", Namespace: "ns", Containers: []*podresourcesv1.ContainerResources{
		{Name: "engine", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-a"}}}},
	}})
	cases := []struct {
		name    string
		free    uint64
		openErr error
		want    string // the role label after one reconcile
		status  string // prefix of the status annotation
	}{
		{"headroom: converted with the label actuator's values", 8 << 30, nil, "pd", protocol.StatusConverted},
		{"3 GiB free under --min-free-gib=4: refused", 3 << 30, nil, "d", "refused: " + protocol.ReasonMemoryShort},
		{"no GPU library: refused", 8 << 30, errors.New("libnvidia-ml.so.1 not found"), "d", "refused: " + protocol.ReasonNVMLError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseAgent(t, "--node=node-1", "--actuator=label", "--label-key=example.com/role", "--decode-value=d",
				"--converted-value=pd", "--pod-resources-socket="+sock, "--min-free-gib=4", "--metrics-address=")
			if err != nil {
				t.Fatal(err)
			}
			c.OpenGPUs = func() (GPUSession, error) {
				if tc.openErr != nil {
					return nil, tc.openErr
				}
				return gpuSession{free: tc.free}, nil
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d1", Namespace: "ns",
				Labels:      map[string]string{"example.com/role": "d"},
				Annotations: map[string]string{protocol.AnnotationKVProducer: "true", protocol.AnnotationConvertUntil: protocol.FormatTime(time.Now().Add(time.Minute))}},
				Spec: corev1.PodSpec{NodeName: "node-1"}}
			client := fake.NewClientset(pod)
			a, closeAll, err := c.Build(client, metrics.NewKubeRegistry().MustRegister)
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll()
			// The first connect and NVML read are given a minute: the 5 s defaults could end them on a
			// loaded machine, which the wiring under test does not set.
			h := a.o.GPUs.(*Headroom)
			h.ReadTimeout = time.Minute
			h.Devices.(*PodResources).Timeout = time.Minute
			if k, ok := a.o.Kubelet.(*PodResources); !ok || k != h.Devices {
				t.Errorf("the agent's kubelet is %T, not the PodResources client its headroom check uses", a.o.Kubelet)
			}
			if err := a.Reconcile(context.Background(), pod); err != nil {
				t.Fatal(err)
			}
			got, err := client.CoreV1().Pods("ns").Get(context.Background(), "d1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Labels["example.com/role"] != tc.want || !strings.HasPrefix(got.Annotations[protocol.AnnotationStatus], tc.status) {
				t.Errorf("role %q status %q; want %q and %q...", got.Labels["example.com/role"], got.Annotations[protocol.AnnotationStatus], tc.want, tc.status)
			}
		})
	}
}

func TestAgentCommandRejectsBadFlags(t *testing.T) {
	_, err := parseAgent(t, "--actuator=label", "--decode-value=same", "--converted-value=same", "--min-free-gib=-1",
		"--max-utilisation=101", "--selector=a in (", "--metrics-address=nope", "--pod-resources-socket=")
	if err == nil {
		t.Fatal("bad agent flags accepted")
	}
	for _, want := range []string{"no node name", "both \"same\"", "--min-free-gib", "--max-utilisation", "--selector", "--metrics-address", "--pod-resources-socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors %q lack %q", err, want)
		}
	}
	// A zero flip interval would read as the agent's 30s default while the controller leased at 0.
	if _, err := parseAgent(t, "--node=n", "--min-flip-interval=0"); err == nil || !strings.Contains(err.Error(), "--min-flip-interval 0s") {
		t.Errorf("min flip interval 0: %v", err)
	}
	if _, err := parseAgent(t, "--node=n", "--actuator=sglang", "--sglang-port=0"); err == nil || !strings.Contains(err.Error(), "--sglang-port") {
		t.Errorf("sglang port 0: %v", err)
	}
	if _, err := parseAgent(t, "--node=n"); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	if _, err := parseAgent(t, "--node=n", "--max-lease=25h"); err == nil || !strings.Contains(err.Error(), "--max-lease 25h0m0s must be at most 24h") {
		t.Errorf("--max-lease over a day: %v", err)
	}
	// A selector on the role label must match both roles, or converting a pod drops it from the watch.
	if _, err := parseAgent(t, "--node=n", "--selector=llm-d.ai/role=decode"); err == nil || !strings.Contains(err.Error(), "llm-d.ai/role=prefill-decode") {
		t.Errorf("a selector matching decode pods only: %v", err)
	}
	if _, err := parseAgent(t, "--node=n", "--selector=llm-d.ai/role in (decode,prefill-decode),app=vllm"); err != nil {
		t.Errorf("a selector matching both roles refused: %v", err)
	}
}

func TestControllerCommandRejectsBadFlags(t *testing.T) {
	parse := func(args ...string) error {
		cmd := options.New("tokenscale-converter controller")
		var c ControllerCommand
		c.AddFlags(cmd)
		return cmd.Parse(args, &bytes.Buffer{})
	}
	if err := parse(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	err := parse("--max-fraction=1.5", "--lease=5m", "--max-lease=1m", "--leader-election-renew-deadline=20s", "--namespace=Bad_NS")
	if err == nil {
		t.Fatal("bad controller flags accepted")
	}
	for _, want := range []string{"--max-fraction", "longer than --max-lease", "renew-deadline", "--namespace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors %q lack %q", err, want)
		}
	}
	for _, lease := range []string{"2ns", "10ms"} {
		if err := parse("--lease=" + lease); err == nil || !strings.Contains(err.Error(), "at least 1s") {
			t.Errorf("--lease=%s: %v; want it refused", lease, err)
		}
	}
	// Deadlines are multiples of --lease: a century's would overflow and wrap into the past.
	if err := parse("--max-lease=1000000h", "--lease=900000h"); err == nil || !strings.Contains(err.Error(), "--max-lease 1000000h0m0s must be at most 24h") {
		t.Errorf("--max-lease of a century: %v; want it refused", err)
	}
	if err := parse("--max-lease=24h", "--lease=12h"); err != nil {
		t.Errorf("a day's --max-lease: %v", err)
	}
	if err := parse("--refusal-backoff=0", "--min-flip-interval=0"); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("zero back-off and flip interval: %v", err)
	}
	// client-go refuses a renewal deadline within its jitter of the retry period, once the controller has
	// synced: refused at the flags instead.
	if err := parse("--leader-election-retry-period=9s", "--leader-election-renew-deadline=10s", "--leader-election-lease-duration=15s"); err == nil || !strings.Contains(err.Error(), "longer than 1.2 × --leader-election-retry-period (9s)") {
		t.Errorf("a retry period within the jitter of the renew deadline: %v; want it refused", err)
	}
	if err := parse("--leader-elect=false", "--leader-election-renew-deadline=20s"); err != nil {
		t.Errorf("leader election off, its timings are not checked: %v", err)
	}
	if err := parse("--client-qps=0"); err == nil || !strings.Contains(err.Error(), "--client-qps") {
		t.Errorf("--client-qps=0: %v; want it refused", err)
	}
	// Lease renewals need more than client-go's 5 writes a second: the controller's own default.
	cmd := options.New("tokenscale-converter controller")
	var c ControllerCommand
	c.AddFlags(cmd)
	if err := cmd.Parse(nil, &bytes.Buffer{}); err != nil || c.Kube.QPS != ControllerQPS || c.Kube.Burst != 2*ControllerQPS {
		t.Errorf("default client rates %g and %d (%v); want %d and %d", c.Kube.QPS, c.Kube.Burst, err, ControllerQPS, 2*ControllerQPS)
	}
}

// `tokenscale-converter gpus` checks its thresholds as the agent does.
func TestGPUCommandRejectsBadFlags(t *testing.T) {
	parse := func(args ...string) error {
		cmd := options.New("tokenscale-converter gpus")
		var c AgentCommand
		c.AddGPUFlags(cmd)
		return cmd.Parse(args, &bytes.Buffer{})
	}
	if err := parse(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	err := parse("--max-utilisation=150", "--min-free-gib=-1")
	for _, want := range []string{"--max-utilisation 150", "--min-free-gib -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors %v lack %q", err, want)
		}
	}
}

func TestPrintGPUs(t *testing.T) {
	var out bytes.Buffer
	PrintGPUs(&out, "550.54", "12.550", []GPUReading{
		{UUID: "GPU-a", Name: "H100", MemTotal: 80 << 30, MemFree: 60 << 30, Utilisation: 5, UtilisationKnown: true},
		{UUID: "GPU-b", Name: "H100", MemTotal: 80 << 30, MemFree: 1 << 30, MIG: true},
	}, Need{MinFreeBytes: 2 << 30, MaxUtilisation: 90})
	s := out.String()
	for _, want := range []string{"2 GPU(s)", "need 2.0 GiB free", "GPU-a  H100  memory 60.0/80.0 GiB free  util 5%", "headroom: yes", "util n/a  MIG true", "headroom: no, " + protocol.ReasonMemoryShort} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
