package converter

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/tokenscale/tokenscale/converter/protocol"
)

// A pod's annotation that a log line repeats (a quiet agent's unparsable status time) is written
// printable and short: whoever can patch the pod writes it, up to 256 KiB, and klog writes a value with a
// newline as it is.
func TestLoggedAnnotationsArePrintable(t *testing.T) {
	var out bytes.Buffer
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if err := fs.Set("logtostderr", "false"); err != nil {
		t.Fatal(err)
	}
	klog.SetOutput(&out)
	defer func() {
		klog.Flush()
		_ = fs.Set("logtostderr", "true")
		klog.SetOutput(nil)
	}()

	hostile := "2026\n\x1b[2J\u202eforged=\"y\"" + strings.Repeat("x", 200<<10)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "d-0", Annotations: map[string]string{
		protocol.AnnotationStatus:   protocol.StatusConverted,
		protocol.AnnotationStatusAt: hostile,
	}}}
	c := &Controller{quiet: map[types.NamespacedName]bool{}}
	c.reportQuiet([]*corev1.Pod{pod}, time.Now(), map[types.NamespacedName]bool{})
	klog.Flush()
	logged := out.String()
	if !strings.Contains(logged, "agent has written no heartbeat") {
		t.Fatalf("no quiet pod logged: %q", logged)
	}
	if strings.Count(logged, "\n") != 1 || len(logged) > 2048 ||
		strings.IndexFunc(logged, func(r rune) bool { return r != ' ' && r != '\n' && !unicode.IsPrint(r) }) >= 0 {
		t.Errorf("the log line (%d bytes) holds the annotation as it is: %.400q", len(logged), logged)
	}
}
