package config

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

const good = `version: tokenscale.io/v1alpha1
scrape:
  interval: 1s
pools:
- name: prefill
  namespace: llm
  role: prefill
  selector: {llm-d.ai/role: prefill}
  workload: {kind: Deployment, name: llama-prefill}
  profile: {prefillTokensPerSecond: 9000}
  ratio: {min: 0.5, max: 2}
- name: decode
  namespace: llm
  role: decode
  engine: sglang
  selector: {llm-d.ai/role: decode}
`

func TestParseGoodAndDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	if p.Profile.PrefillTPS != 9000 || p.Port != 8000 || p.Path != "/metrics" || p.SLO.TTFT.Duration != 2*time.Second || p.MinReplicas != 1 {
		t.Errorf("pool 0 = %+v", p)
	}
	if c.Scrape.Timeout.Duration != 800*time.Millisecond || c.Policy.TargetUtilisation != 0.85 || c.Policy.DecodeTargetUtilisation != 0.85 || !*c.Policy.Calibrate {
		t.Errorf("defaults not applied: %+v %+v", c.Scrape, c.Policy)
	}
}

// trtllm-serve's /metrics is JSON; its Prometheus text is at /prometheus/metrics, the trtllm pools'
// default unless a path is set for the pool or for every pool.
func TestTRTLLMDefaultPath(t *testing.T) {
	pools := `pools:
- {name: a, role: prefill, engine: trtllm, selector: {r: a}}
- {name: b, role: decode, engine: trtllm, selector: {r: b}, path: /m}
- {name: c, role: decode, group: other, engine: vllm, selector: {r: c}}
`
	for _, tc := range []struct {
		scrape string
		want   [3]string
	}{
		{"", [3]string{TRTLLMPath, "/m", "/metrics"}},
		{"scrape: {path: /metrics}\n", [3]string{"/metrics", "/m", "/metrics"}},
		{"scrape: {path: /x}\n", [3]string{"/x", "/m", "/x"}},
	} {
		c, err := Parse([]byte("version: tokenscale.io/v1alpha1\n" + tc.scrape + pools))
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range tc.want {
			if got := c.Pools[i].Path; got != want {
				t.Errorf("%q: pool %s path = %q, want %q", tc.scrape, c.Pools[i].Name, got, want)
			}
		}
	}
}

func TestDefaultFitsLLMD(t *testing.T) {
	c := Default()
	if len(c.Pools) != 2 || c.Pools[0].Selector["llm-d.ai/role"] != "prefill" || c.Pools[1].Role != RoleDecode {
		t.Errorf("default pools = %+v", c.Pools)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field names its line", "version: tokenscale.io/v1alpha1\npools:\n- name: a\n  role: prefill\n  selektor: {a: b}\n", "line 5"},
		{"wrong version", "version: v2\npools: []\n", `version "v2" is not supported`},
		{"bad role", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefil, selector: {a: b}}\n", "allowed values are prefill, decode, both"},
		{"bad duration", "version: tokenscale.io/v1alpha1\nscrape: {interval: fast}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "line 2"},
		{"timeout above interval", "version: tokenscale.io/v1alpha1\nscrape: {interval: 1s, timeout: 2s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "must not exceed"},
		{"spread and timeout overrun the interval", "version: tokenscale.io/v1alpha1\nscrape: {interval: 1s, timeout: 500ms, spread: 600ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.spread (600ms) plus scrape.timeout (500ms) must not exceed scrape.interval (1s)"},
		{"a spread whose sum with the timeout overflows", "version: tokenscale.io/v1alpha1\nscrape: {spread: 2562047h47m16.1s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.spread (2562047h47m16.1s) plus scrape.timeout (800ms) must not exceed scrape.interval (1s)"},
		{"negative spread", "version: tokenscale.io/v1alpha1\nscrape: {spread: -1s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "negative"},
		{"empty selector", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill}\n", "selector"},
		{"empty", "", "empty"},
		{"bad engine", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, engine: tgi, selector: {a: b}}\n", "allowed values are auto"},
		{"interval of an hour", "version: tokenscale.io/v1alpha1\nscrape: {interval: 1h, timeout: 1s, staleAfter: 2h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.interval (1h0m0s) must be between 100ms and 1m"},
		{"body limit of a gigabyte", "version: tokenscale.io/v1alpha1\nscrape: {maxBodyBytes: 1073741824}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.maxBodyBytes (1073741824) must be between 1024 and 67108864 (64 MiB)"},
		{"ten thousand scrapes at once", "version: tokenscale.io/v1alpha1\nscrape: {concurrency: 10000}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.concurrency (10000) must be between 1 and 4096"},
		{"stale after a day", "version: tokenscale.io/v1alpha1\nscrape: {staleAfter: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "at most 1h"},
		{"latency window of an hour", "version: tokenscale.io/v1alpha1\nscrape: {latencyWindow: 1h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.latencyWindow (1h0m0s) must be between"},
		{"cold start of a day", "version: tokenscale.io/v1alpha1\npolicy: {coldStart: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.coldStart (24h0m0s) must be at most 1h"},
		{"burst attainment of 1", "version: tokenscale.io/v1alpha1\npolicy: {burstAttainment: 1}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.burstAttainment 1 must be below 1"},
		{"scale-down quantile above 1", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownQuantile: 1.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownQuantile 1.5 must be in (0, 1]"},
		{"negative scale-down quantile", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownQuantile: -0.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownQuantile -0.5 must be in (0, 1]"},
		{"decode utilisation above 1", "version: tokenscale.io/v1alpha1\npolicy: {decodeTargetUtilisation: 1.2}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.decodeTargetUtilisation 1.2 must be in [0.01, 1]"},
		{"a day's window at 100 ms", "version: tokenscale.io/v1alpha1\nscrape: {interval: 100ms, timeout: 100ms}\npolicy: {scaleDownWindow: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "spans 864000 rounds of scrape.interval (100ms): at most 20000 (33m20s at this interval)"},
		{"a window a half round past 20,000", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownWindow: 20000500ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "spans 20001 rounds of scrape.interval (1s): at most 20000 (5h33m20s at this interval)"},
		{"converted prefill of 1e-19", "version: tokenscale.io/v1alpha1\npolicy: {convertedPrefill: 1e-19}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.convertedPrefill 1e-19 must be in [0.01, 1]"},
		{"utilisation of 1e-30", "version: tokenscale.io/v1alpha1\npolicy: {targetUtilisation: 1e-30}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.targetUtilisation 1e-30 must be in [0.01, 1]"},
		{"a velocity of 5e-324", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, profile: {kvTransferTokensPerSecond: 5e-324}}\n", "profile velocities must be between 1 and 1e+07 tokens/s"},
		{"a velocity of 1e15", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, profile: {prefillTokensPerSecond: 1e15}}\n", "got prefill 1e+15"},
		{"drain of no seconds", "version: tokenscale.io/v1alpha1\npolicy: {drainSeconds: -1}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.drainSeconds -1 must be in [0.1, 3600]"},
		{"drain of a tiny time", "version: tokenscale.io/v1alpha1\npolicy: {drainSeconds: 1e-300}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.drainSeconds 1e-300 must be in [0.1, 3600]"},
		{"drain of 1e300 seconds", "version: tokenscale.io/v1alpha1\npolicy: {drainSeconds: 1e300}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.drainSeconds 1e+300 must be in [0.1, 3600]"},
		{"cold start in milliseconds", "version: tokenscale.io/v1alpha1\npolicy: {coldStart: 60ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.coldStart (60ms) must be at least 1s"},
		{"horizon shorter than a round", "version: tokenscale.io/v1alpha1\npolicy: {horizon: 5ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.horizon (5ms) must be at least 1s"},
		{"release hold shorter than a round", "version: tokenscale.io/v1alpha1\npolicy: {releaseHold: 2ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.releaseHold (2ms) must be at least 1s"},
		{"scale-down window in milliseconds", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownWindow: 999ms}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownWindow (999ms) must be at least 1s"},
		{"TTFT in milliseconds", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, slo: {ttft: 2ms}}\n", "pools[0] (a): slo.ttft (2ms) must be at least 10ms"},
		{"ITL in microseconds", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, slo: {itl: 100us}}\n", "slo.itl (100µs) must be at least 1ms"},
		{"two ratio bands in one group", "version: tokenscale.io/v1alpha1\npools:\n- {name: p, namespace: llm, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, role: decode, selector: {a: c}, ratio: {min: 1, max: 1}}\n", "pools[0] (p) and pools[1] (d) set different ratio bands (0.5..2 and 1..1) and may be sized together"},
		{"two ratio bands in one named group", "version: tokenscale.io/v1alpha1\npools:\n- {name: p, group: llama, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, namespace: llama, role: decode, selector: {a: c}, ratio: {min: 1, max: 1}}\n", "set different ratio bands"},
		{"convert fraction above 1", "version: tokenscale.io/v1alpha1\npolicy: {maxConvertFraction: 1.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.maxConvertFraction 1.5 must be in [0, 1]"},
		{"negative min replicas", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, minReplicas: -1}\n", "need 1 <= minReplicas <= maxReplicas <= 1000000 (minReplicas 0 or unset: 1; maxReplicas unset: 100), got -1 and 100"},
		{"two pools on one workload", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, namespace: llm, role: prefill, selector: {a: b}, workload: {name: w}}\n- {name: b, role: decode, selector: {a: c}, workload: {kind: Deployment, name: w}}\n", "pools[0] (a) and pools[1] (b) both name workload Deployment/w"},
		{"scale-down window of a year", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownWindow: 8760h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownWindow (8760h0m0s) must be at most 24h"},
		{"ratio of 1e300", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, ratio: {min: 1e300, max: 1e300}}\n", "ratio needs 0.01 <= min <= max <= 100"},
		{"path that moves the host", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, path: \"@evil.example/m\"}\n", `path "@evil.example/m": want an absolute path`},
		{"relative scrape path", "version: tokenscale.io/v1alpha1\nscrape: {path: metrics}\npools:\n- {name: a, role: prefill, selector: {a: b}, path: /m}\n", `scrape.path "metrics": want an absolute path`},
		{"scrape scheme", "version: tokenscale.io/v1alpha1\nscrape: {scheme: ftp}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", `scrape.scheme "ftp": allowed values are http, https`},
		{"scrape port", "version: tokenscale.io/v1alpha1\nscrape: {port: 70000}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", `scrape.port 70000 out of range`},
		{"pool port", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, port: -1}\n", `pools[0] (a): port -1 out of range`},
		{"ratio inverted", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, ratio: {min: 2, max: 1}}\n", "ratio"},
		{"concurrency times body limit above the budget", "version: tokenscale.io/v1alpha1\nscrape: {concurrency: 4096, maxBodyBytes: 2097152}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n",
			"scrape.concurrency (4096) × scrape.maxBodyBytes (2097152) is 8589934592 bytes, above the budget of 4294967296"},
		{"prompt of 1e300 tokens", "version: tokenscale.io/v1alpha1\nscrape: {promptTokens: 1e300}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.promptTokens 1e+300 must be between 1 and 1e+07"},
		{"prompt just above the store's cap", "version: tokenscale.io/v1alpha1\nscrape: {promptTokens: 10000001}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.promptTokens 1.0000001e+07 must be between 1 and 1e+07"},
		{"timeout of a nanosecond", "version: tokenscale.io/v1alpha1\nscrape: {timeout: 1ns}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.timeout (1ns) must be at least 10ms"},
		{"release held for a day", "version: tokenscale.io/v1alpha1\npolicy: {releaseHold: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.releaseHold (24h0m0s) must be at most 1h"},
		{"horizon of a day", "version: tokenscale.io/v1alpha1\npolicy: {horizon: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.horizon (24h0m0s) must be at most 1h"},
		{"TTFT SLO of a day", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, slo: {ttft: 24h}}\n", "pools[0] (a): slo.ttft (24h0m0s) must be at most 1h"},
		{"ITL SLO of an hour", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, slo: {itl: 1h}}\n", "pools[0] (a): slo.itl (1h0m0s) must be at most 1m"},
		{"namespace not a DNS label", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, namespace: LLM_team, role: prefill, selector: {a: b}}\n", `pools[0] (a): namespace "LLM_team" must be a DNS label`},
		{"namespace of 64 characters", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, namespace: " + strings.Repeat("n", 64) + ", role: prefill, selector: {a: b}}\n", "must be a DNS label"},
		{"selector key with a space", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {llm-d.ai/my role: prefill}}\n", `pools[0] (a): selector key "llm-d.ai/my role" is not a label key`},
		{"selector key with an upper-case prefix", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {LLM-D.ai/role: prefill}}\n", `selector key "LLM-D.ai/role" is not a label key`},
		{"selector key with an empty prefix", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {/role: prefill}}\n", `selector key "/role" is not a label key`},
		{"selector key of 64 characters", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {" + strings.Repeat("k", 64) + ": x}}\n", "is not a label key"},
		{"selector value with a slash", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {llm-d.ai/role: pre/fill}}\n", `pools[0] (a): selector llm-d.ai/role value "pre/fill" is not a label value`},
		{"selector value ending in a dash", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {role: prefill-}}\n", `selector role value "prefill-" is not a label value`},
		{"selector value of 64 characters", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {role: " + strings.Repeat("v", 64) + "}}\n", "is not a label value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || strings.Count(err.Error(), tc.want) != 1 {
				t.Fatalf("err = %v, want it to contain %q once", err, tc.want)
			}
		})
	}
}

// watchGood writes the good config to a fresh file and watches it; each reload's outcome is appended to
// outcomes where it is not nil.
func watchGood(t *testing.T, outcomes *[]error) (string, *Watcher) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	if outcomes != nil {
		w.OnReload = func(err error) { *outcomes = append(*outcomes, err) }
	}
	return path, w
}

func TestHotReloadKeepsOldOnBadFile(t *testing.T) {
	path, w := watchGood(t, nil)
	var got *Config
	w.OnChange = func(c *Config) { got = c }
	if err := os.WriteFile(path, []byte("version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: nope, selector: {a: b}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), "keeping the previous config") {
		t.Fatalf("bad reload: changed=%v err=%v", changed, err)
	}
	if len(w.Current().Pools) != 2 || got != nil {
		t.Fatal("old config must stay in force")
	}
	if err := os.WriteFile(path, []byte(strings.Replace(good, "9000", "7000", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); !changed || err != nil {
		t.Fatalf("good reload: changed=%v err=%v", changed, err)
	}
	if w.Current().Pools[0].Profile.PrefillTPS != 7000 || got == nil {
		t.Error("new config not in force")
	}
}

// A reload that changes scrape.* is refused, not accepted and silently ignored: the loop's source and
// store are built from it at start. Outcomes reach OnReload; a file put back clears the rejection.
func TestHotReloadRefusesScrapeChanges(t *testing.T) {
	var outcomes []error
	path, w := watchGood(t, &outcomes)
	before := w.Current()
	changedScrape := strings.Replace(good, "  interval: 1s\n", "  interval: 2s\n", 1)
	if changedScrape == good {
		t.Fatal("fixture: the good config has no scrape interval to change")
	}
	if err := os.WriteFile(path, []byte(changedScrape), 0o600); err != nil {
		t.Fatal(err)
	}
	// At 2 s the default staleAfter follows the interval (10 s), so it is named as changed too.
	if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), "scrape.interval, scrape.staleAfter changed;") {
		t.Fatalf("scrape change: changed=%v err=%v, want a refusal naming scrape.interval", changed, err)
	}
	if w.Current() != before {
		t.Fatal("the config in force changed although the reload was refused")
	}
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); changed || err != nil {
		t.Fatalf("file put back: changed=%v err=%v", changed, err)
	}
	if len(outcomes) != 2 || outcomes[0] == nil || outcomes[1] != nil {
		t.Fatalf("reload outcomes %v, want [refusal, nil]", outcomes)
	}
}

// FuzzParse checks any file: an accepted config holds no NaN, infinite or negative number anywhere and
// keeps the documented bounds; a refusal's error stays bounded, however long the file's keys and values.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("version: tokenscale.io/v1alpha1\npools: [{name: a}]\n"))
	f.Add([]byte("version: tokenscale.io/v1alpha1\npolicy: {targetUtilisation: .nan, scaleDownWindow: -1s}\npools: [{name: a, role: prefill, selector: {a: b}, port: 70000, profile: {prefillTokensPerSecond: 1e300}}]\n"))
	f.Add([]byte("version: tokenscale.io/v1alpha1\nscrape: {interval: 500ms, timeout: 400ms, spread: 100ms}\npools:\n- {name: p, role: prefill, selector: {r: p}, group: g, ratio: {min: 0.5, max: 4}}\n- {name: d, role: decode, selector: {r: d}, group: g}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if n := len(err.Error()); n > 64<<10 {
				t.Fatalf("an error of %d bytes from a file of %d", n, len(data))
			}
			// klog writes an error of several lines as it is: every line printable.
			if i := strings.IndexFunc(err.Error(), func(r rune) bool { return r != ' ' && r != '\n' && !unicode.IsPrint(r) }); i >= 0 {
				t.Fatalf("an error with a character that is not printable at byte %d: %.300q", i, err.Error()[max(0, i-100):])
			}
			return
		}
		for _, p := range c.Pools {
			if !(p.Port >= 1 && p.Port <= 65535) || p.MaxReplicas < p.MinReplicas ||
				!(p.Profile.PrefillTPS > 0 && p.Profile.PrefillTPS <= MaxProfileTPS) || !(p.Profile.DecodeTPS > 0 && p.Profile.DecodeTPS <= MaxProfileTPS) {
				t.Fatalf("accepted an invalid pool: %+v", p)
			}
		}
		if c.Scrape.Timeout.Duration > c.Scrape.Interval.Duration || !(c.Policy.TargetUtilisation > 0 && c.Policy.TargetUtilisation <= 1) ||
			!(c.Policy.DecodeTargetUtilisation > 0 && c.Policy.DecodeTargetUtilisation <= 1) {
			t.Fatalf("accepted invalid scrape/policy: %+v %+v", c.Scrape, c.Policy)
		}
		if path, ok := nonNegative(reflect.ValueOf(c), "config"); !ok {
			t.Fatalf("accepted %s", path)
		}
	})
}

// nonNegative walks v and reports the first number that is NaN, infinite or below 0, by its path.
func nonNegative(v reflect.Value, path string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return "", true
		}
		return nonNegative(v.Elem(), path)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				if p, ok := nonNegative(v.Field(i), path+"."+v.Type().Field(i).Name); !ok {
					return p, false
				}
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if p, ok := nonNegative(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
	case reflect.Float32, reflect.Float64:
		if x := v.Float(); !(x >= 0 && x <= math.MaxFloat64) {
			return fmt.Sprintf("%s = %v", path, x), false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Int() < 0 {
			return fmt.Sprintf("%s = %d", path, v.Int()), false
		}
	}
	return "", true
}

// maxConvertFraction: 0 turns conversions off rather than falling back to the default, as the docs say;
// unset is the default 0.25; calibrate: false is kept.
func TestZeroConvertFractionAndCalibrateOff(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Policy.ConvertFraction(); got != 0.25 || !c.Policy.Calibrates() {
		t.Errorf("unset: convert fraction %v and calibrates %v, want 0.25 and true", got, c.Policy.Calibrates())
	}
	off := strings.Replace(good, "scrape:\n", "policy: {maxConvertFraction: 0, calibrate: false}\nscrape:\n", 1)
	if off == good {
		t.Fatal("test config not edited")
	}
	c, err = Parse([]byte(off))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Policy.ConvertFraction(); got != 0 || c.Policy.Calibrates() {
		t.Errorf("set off: convert fraction %v and calibrates %v, want 0 and false", got, c.Policy.Calibrates())
	}
	var zero Policy
	if zero.ConvertFraction() != 0.25 || !zero.Calibrates() {
		t.Errorf("a Policy never completed gives %v and %v, want the defaults", zero.ConvertFraction(), zero.Calibrates())
	}
}

// A config file is read only if it is a regular file of at most maxFileBytes: /dev/zero, a FIFO or a
// huge file is an error naming the path, not the adapter's memory or a hang.
func TestConfigFileIsBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, append([]byte(good), make([]byte, maxFileBytes)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("huge file: %v", err)
	}
	if _, err := NewWatcher(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge file, watcher: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := Load("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ok); err != nil {
		t.Errorf("a good file: %v", err)
	}
}

// A group sizes one prefill (or both-roles) pool and one decode pool: two pools that would take the same
// place in one group are refused, since the adapter would size one and answer every number of the other
// as unknown. Two models in one namespace without groups is the common way to get there.
func TestPoolsSharingAGroupPlaceRefused(t *testing.T) {
	for _, tc := range []struct {
		pools string
		clash bool
	}{
		// Two models in one namespace, no groups: both prefill pools are the namespace's group's.
		{"- {name: a, namespace: llm, role: prefill, selector: {m: a}}\n- {name: b, namespace: llm, role: prefill, selector: {m: b}}\n", true},
		// Both-roles pools take the prefill place, so they clash with a prefill pool too.
		{"- {name: a, namespace: llm, role: both, selector: {m: a}}\n- {name: b, namespace: llm, role: prefill, selector: {m: b}}\n", true},
		{"- {name: a, namespace: x, role: decode, group: g, selector: {m: a}}\n- {name: b, namespace: x, role: decode, group: g, selector: {m: b}}\n", true},
		// An ungrouped pool in namespace g meets a pool of group g there.
		{"- {name: a, namespace: g, role: decode, selector: {m: a}}\n- {name: b, namespace: g, role: decode, group: g, selector: {m: b}}\n", true},
		// Each model its own group, or its own namespace, or the two places of one group: fine.
		{"- {name: a, namespace: llm, role: prefill, group: a, selector: {m: a}}\n- {name: b, namespace: llm, role: prefill, group: b, selector: {m: b}}\n", false},
		{"- {name: a, namespace: x, role: prefill, selector: {m: a}}\n- {name: b, namespace: y, role: prefill, selector: {m: b}}\n", false},
		{"- {name: a, namespace: x, role: prefill, group: g, selector: {m: a}}\n- {name: b, namespace: y, role: prefill, group: g, selector: {m: b}}\n", false},
		{"- {name: a, role: prefill, selector: {m: a}}\n- {name: b, role: decode, selector: {m: b}}\n", false},
		// A pool fixed to a namespace replaces the one of the same name there.
		{"- {name: a, role: prefill, selector: {m: a}}\n- {name: a, namespace: team, role: prefill, selector: {m: t}}\n", false},
		// Pools of every namespace meet only where both have Ready pods (one model per namespace never
		// does): not refused; the adapter reports the pool it does not size.
		{"- {name: a, role: decode, selector: {m: a}}\n- {name: b, role: decode, selector: {m: b}}\n", false},
		{"- {name: a, role: decode, selector: {m: a}}\n- {name: b, namespace: llm, role: decode, selector: {m: b}}\n", false},
		{"- {name: a, role: decode, selector: {m: a}}\n- {name: b, role: decode, group: other, selector: {m: b}}\n", false},
	} {
		_, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n" + tc.pools))
		if got := err != nil && strings.Contains(err.Error(), "a group sizes one of each"); got != tc.clash {
			t.Errorf("pools\n%s: error %v, want a clash: %v", tc.pools, err, tc.clash)
		}
	}
}

// A LeaderWorkerSet pool selects the group leaders only: its scale subresource counts groups, and a pool
// of leaders and workers served a count of pods (4 for two groups of two) that the HPA set as groups.
func TestLeaderWorkerSetPoolSelectsLeaders(t *testing.T) {
	const pool = "version: tokenscale.io/v1alpha1\npools:\n- {name: big, role: decode, selector: %s, workload: {kind: LeaderWorkerSet, name: llama}}\n"
	for _, sel := range []string{"{llm-d.ai/role: decode}", "{llm-d.ai/role: decode, leaderworkerset.sigs.k8s.io/worker-index: \"1\"}"} {
		_, err := Parse([]byte(fmt.Sprintf(pool, sel)))
		if err == nil || !strings.Contains(err.Error(), `pools[0] (big): workload.kind LeaderWorkerSet: selector must hold leaderworkerset.sigs.k8s.io/worker-index: "0"`) {
			t.Errorf("selector %s: err = %v, want the pool refused, naming the label to add", sel, err)
		}
	}
	if _, err := Parse([]byte(fmt.Sprintf(pool, "{llm-d.ai/role: decode, leaderworkerset.sigs.k8s.io/worker-index: \"0\"}"))); err != nil {
		t.Errorf("a pool of leaders: %v", err)
	}
}

// Each out-of-range scrape and policy value is its own error naming its key and value, not one error
// listing three keys' ranges whichever was wrong.
func TestRangeErrorsNameTheirKey(t *testing.T) {
	_, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {concurrency: -1, maxBodyBytes: 100, promptTokens: 0.5}\n" +
		"policy: {maxConvertFraction: -0.5, convertedPrefill: 2}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"scrape.concurrency (-1) must be between 1 and 4096",
		"scrape.maxBodyBytes (100) must be between 1024 and 67108864",
		"scrape.promptTokens 0.5 must be between 1 and 1e+07",
		"policy.maxConvertFraction -0.5 must be in [0, 1]",
		"policy.convertedPrefill 2 must be in [0.01, 1]",
	} {
		if strings.Count(err.Error(), want) != 1 {
			t.Errorf("error %q, want it to say %q once", err, want)
		}
	}
}

// A value of the wrong type or a bad duration names the key it is under, not only its line: the decoder
// alone said "line 12: time: missing unit in duration" or "cannot unmarshal !!str into float64".
func TestDecodeErrorsNameTheirKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"scrape: {interval: 1}\n", "line 2 (scrape.interval): time: missing unit"},
		{"scrape:\n  timeout: -5s\n", "line 3 (scrape.timeout): duration \"-5s\" is negative"},
		{"scrape:\n  timeout: [1s]\n", "line 3 (scrape.timeout[0]): duration must be a string"},
		{"policy:\n  targetUtilisation: high\n", "line 3 (policy.targetUtilisation): cannot unmarshal"},
		{"scrape: 5\n", "line 2 (scrape): cannot unmarshal"},
		{"pools:\n- name: a\n  role: prefill\n- name: b\n  slo:\n    ttft: 5x\n", "line 7 (pools[1].slo.ttft): time: unknown unit"},
		{"pools:\n- {name: a, maxReplicas: many}\n", "line 3 (pools[0].name or pools[0].maxReplicas): cannot unmarshal"},
	} {
		_, err := Parse([]byte("version: tokenscale.io/v1alpha1\n" + tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
	// What the names add is bounded: every selector value of the wrong type under a long label name.
	var b strings.Builder
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n- name: a\n  role: prefill\n  selector:\n")
	long := strings.Repeat("k", 1000)
	for i := range 200 {
		fmt.Fprintf(&b, "    %s%d: [x]\n", long, i)
	}
	_, err := Parse([]byte(b.String()))
	// Named up to maxKeyText characters: a key from the file is not copied whole into each error.
	if err == nil || !strings.Contains(err.Error(), "(pools[0].selector."+long[:maxKeyText]+"…") || strings.Contains(err.Error(), long[:maxKeyText+1]) {
		t.Fatalf("long keys: %.300v, want the first named, cut at %d characters", err, maxKeyText)
	}
	if plain := len(b.String()); len(err.Error()) > plain/4 {
		t.Errorf("long keys: the error is %d bytes for a %d-byte file", len(err.Error()), plain)
	}
	// A syntax error has no key to name and keeps the decoder's words.
	if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {interval: 1s\n")); err == nil || strings.Contains(err.Error(), "(") {
		t.Errorf("syntax error: %v, want the decoder's message without a key", err)
	}
}

// The bounds are inclusive, and the defaults and the values shipped elsewhere fit them.
func TestRangeBoundsAccepted(t *testing.T) {
	for _, tc := range []string{
		"scrape: {concurrency: 1024, maxBodyBytes: 4194304}\n", // exactly the 4 GiB budget
		"scrape: {concurrency: 4096, maxBodyBytes: 1048576}\n",
		"scrape: {concurrency: 64, maxBodyBytes: 67108864}\n",
		"scrape: {promptTokens: 10000000}\n",
		"scrape: {interval: 100ms, timeout: 10ms}\n",
		"policy: {releaseHold: 1h, horizon: 1h}\n",
		"policy: {coldStart: 1s, drainSeconds: 3600}\n",
		"policy: {horizon: 1s, releaseHold: 1s, scaleDownWindow: 1s}\n",
	} {
		if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\n" + tc + "pools:\n- {name: a, role: prefill, selector: {a: b}}\n")); err != nil {
			t.Errorf("%s: %v", tc, err)
		}
	}
	// Ratio bands on two pools that are never sized together, or the same band on both.
	for _, pools := range []string{
		"- {name: p, namespace: a, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, namespace: b, role: decode, selector: {a: c}, ratio: {min: 1, max: 1}}\n",
		"- {name: p, group: x, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, group: y, role: decode, selector: {a: c}, ratio: {min: 1, max: 1}}\n",
		"- {name: p, group: x, namespace: a, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, namespace: a, role: decode, selector: {a: c}, ratio: {min: 1, max: 1}}\n",
		"- {name: p, role: prefill, selector: {a: b}, ratio: {min: 0.5, max: 2}}\n- {name: d, role: decode, selector: {a: c}, ratio: {min: 0.5, max: 2}}\n",
		// A pool fixed to a namespace shadows the pool of its name there: the band of every other namespace
		// never meets the one fixed in "big".
		"- {name: p, role: prefill, selector: {a: b}, ratio: {min: 0.25, max: 2}}\n- {name: d, role: decode, selector: {a: c}}\n" +
			"- {name: p, namespace: big, role: prefill, selector: {a: b}}\n- {name: d, namespace: big, role: decode, selector: {a: c}, ratio: {min: 1, max: 4}}\n",
	} {
		if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n" + pools)); err != nil {
			t.Errorf("%s: %v", pools, err)
		}
	}
	for _, slo := range []string{"ttft: 10ms", "itl: 1ms"} {
		if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, slo: {" + slo + "}}\n")); err != nil {
			t.Errorf("slo {%s}: %v", slo, err)
		}
	}
	pool := "version: tokenscale.io/v1alpha1\npools:\n- {name: a, namespace: llm-0, role: prefill, slo: {ttft: 1h, itl: 1m}, selector: {%s}}\n"
	for _, sel := range []string{"llm-d.ai/role: prefill", "role: ''", "app.kubernetes.io/name: vLLM_0.1-x", "a: " + strings.Repeat("v", 63), strings.Repeat("k", 63) + ": x"} {
		if _, err := Parse([]byte(fmt.Sprintf(pool, sel))); err != nil {
			t.Errorf("selector {%s}: %v", sel, err)
		}
	}
}

// A config Go code built and marshalled (the simulator checks its own config so) parses back: a nil
// ratio is left out, not written as the null Parse refuses.
func TestMarshalledConfigParses(t *testing.T) {
	data, err := yaml.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatalf("the default config, marshalled, does not parse: %v\n%s", err, data)
	}
}

// The configs shipped with the project (the documented example, the manifests' ConfigMap, the chart's
// values) parse under every rule: docs/metrics.md's bounds must not refuse its own example.
func TestShippedConfigsParse(t *testing.T) {
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Configuration \\(`velocity/config`\\)\n\n```yaml\n(.*?)```").FindSubmatch(docs)
	if m == nil {
		t.Fatal("docs/metrics.md: no yaml block under its Configuration section")
	}
	documented, err := Parse(m[1])
	if err != nil {
		t.Fatalf("docs/metrics.md's example: %v", err)
	}
	// Its values are the defaults it documents: a default changed in complete() alone would leave the
	// reference saying the old one.
	def := Default()
	if !reflect.DeepEqual(documented.Policy, def.Policy) {
		t.Errorf("docs/metrics.md's example policy %+v differs from the defaults %+v", documented.Policy, def.Policy)
	}
	if !reflect.DeepEqual(documented.Scrape, def.Scrape) {
		t.Errorf("docs/metrics.md's example scrape %+v differs from the defaults %+v", documented.Scrape, def.Scrape)
	}
	for i, p := range documented.Pools {
		d := def.Pools[0]
		if p.SLO != d.SLO || p.Profile != d.Profile || p.MinReplicas != d.MinReplicas || p.MaxReplicas != d.MaxReplicas {
			t.Errorf("docs/metrics.md's example pools[%d]: slo %+v, profile %+v, replicas %d..%d; the defaults are %+v, %+v, %d..%d",
				i, p.SLO, p.Profile, p.MinReplicas, p.MaxReplicas, d.SLO, d.Profile, d.MinReplicas, d.MaxReplicas)
		}
	}
	cm, err := os.ReadFile("../../manifests/common/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var configMap struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(cm, &configMap); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(configMap.Data["config.yaml"])); err != nil {
		t.Errorf("manifests/common/configmap.yaml: %v", err)
	}
	vals, err := os.ReadFile("../../charts/tokenscale/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config yaml.Node `yaml:"config"`
	}
	if err := yaml.Unmarshal(vals, &values); err != nil {
		t.Fatal(err)
	}
	// The chart renders the config with toYaml, which writes what it was given: a re-marshal stands in.
	rendered, err := yaml.Marshal(&values.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(rendered); err != nil {
		t.Errorf("charts/tokenscale/values.yaml's config: %v", err)
	}
}

// A file of two YAML documents is refused: the second one's settings would be silently ignored.
func TestSecondDocumentRefused(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		line int
	}{
		{good + "---\nversion: tokenscale.io/v1alpha1\npolicy: {targetUtilisation: 0.5}\n", 17},
		{good + "---\n", 17},
		{"---\n" + good + "---\n", 18},
	} {
		_, err := Parse([]byte(tc.yaml))
		if want := fmt.Sprintf("a second YAML document starts at line %d", tc.line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one saying %q", tc.yaml, err, want)
		}
	}
	if _, err := Parse([]byte("---\n" + good)); err != nil {
		t.Errorf("one document opened with ---: %v", err)
	}
}

// An explicit 0 of a key whose 0 reads as unset is refused, naming the key, its line and its default,
// never silently taken as the default (targetUtilisation: 0 is outside the documented [0.01, 1]).
func TestExplicitZeroRefused(t *testing.T) {
	types := map[string]reflect.Type{}
	numericKeys(reflect.TypeOf(Config{}), "", types)
	for pattern, def := range zeroDefaults {
		typ, ok := types[pattern]
		if !ok {
			t.Errorf("zeroDefaults names %s, which is no numeric key of the config", pattern)
			continue
		}
		zeros := []string{"0", "0.0"}
		switch {
		case typ == reflect.TypeOf(Duration{}):
			zeros = []string{"0", "0s", "0ms", "'0h0m'"}
		case typ.Kind() != reflect.Float64:
			zeros = []string{"0", "0x0"}
		}
		for _, zero := range zeros {
			text, path, line := configWith(pattern, zero)
			_, err := Parse([]byte(text))
			want := fmt.Sprintf("line %d: 0 is not a value %s takes; leave it out for its default %s", line, path, def)
			if err == nil || strings.Count(err.Error(), want) != 1 {
				t.Errorf("%s: %s: error %v, want it to say %q once", pattern, zero, err, want)
			}
		}
	}
}

// zeroDefaults lists every numeric key whose 0 the defaults replace, and each default it names is the
// one complete() applies; the other numeric keys take 0 as a value (or refuse it by their range).
func TestZeroDefaultsMatchComplete(t *testing.T) {
	zeroIsAValue := map[string]bool{
		"scrape.spread": true, "policy.maxConvertFraction": true, "pools[].profile.kvTransferTokensPerSecond": true,
		"pools[].minReplicas": true, "pools[].ratio.min": true, "pools[].ratio.max": true,
	}
	types := map[string]reflect.Type{}
	numericKeys(reflect.TypeOf(Config{}), "", types)
	d := reflect.ValueOf(Default()).Elem()
	for pattern := range types {
		_, defaulted := zeroDefaults[pattern]
		if defaulted == zeroIsAValue[pattern] {
			t.Errorf("%s: in zeroDefaults %v, 0 a value %v: want exactly one", pattern, defaulted, zeroIsAValue[pattern])
		}
		if !defaulted {
			continue
		}
		first, _, _ := strings.Cut(zeroDefaults[pattern], " ")
		v := valueAt(d, pattern)
		var same bool
		switch x := v.Interface().(type) {
		case Duration:
			got, err := time.ParseDuration(first)
			same = err == nil && got == x.Duration
		case int, int64:
			same = first == fmt.Sprint(x)
		case float64:
			got, err := strconv.ParseFloat(first, 64)
			same = err == nil && got == x
		}
		if !same {
			t.Errorf("%s: zeroDefaults says %q, the default config has %v", pattern, zeroDefaults[pattern], v.Interface())
		}
	}
	// scrape.concurrency's zero must also be refused with one error, not with its range's too.
	if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {concurrency: 0}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n")); err == nil || strings.Count(err.Error(), "scrape.concurrency") != 1 {
		t.Errorf("concurrency 0: %v", err)
	}
}

// A key with no value (`key:`, ~, null) is refused with its path and line, not read as unset: a null
// maxConvertFraction turned conversions on, a null selector value selected pods whose label is empty.
func TestNullRefused(t *testing.T) {
	head := "version: tokenscale.io/v1alpha1\n"
	pool := "pools:\n- {name: a, role: prefill, selector: {a: b}}\n"
	for _, tc := range []struct{ yaml, want string }{
		{head + "policy:\n  targetUtilisation:\n" + pool, "line 3: policy.targetUtilisation has no value"},
		{head + "policy: {maxConvertFraction: ~}\n" + pool, "line 2: policy.maxConvertFraction has no value"},
		{head + "policy: {calibrate: null}\n" + pool, "line 2: policy.calibrate has no value"},
		{head + "scrape:\n" + pool, "line 2: scrape has no value"},
		{head + "pools:\n- {name: a, role: prefill, selector: {a: }}\n", "line 3: pools[0].selector.a has no value"},
		{head + "pools:\n- {name: a, role: prefill, selector: {a: b}, ratio: }\n", "line 3: pools[0].ratio has no value"},
		{head + "pools:\n- {name: a, role: prefill, selector: {a: b}}\n- ~\n", "line 4: pools[1] has no value"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || strings.Count(err.Error(), tc.want+"; leave the key out for its default") != 1 {
			t.Errorf("%q: error %v, want it to say %q once", tc.yaml, err, tc.want)
		}
	}
}

// Zeros and nulls reached through an alias or a merge key are refused under the key they land on: an
// anchor defined where 0 is a value (a selector's value) must not carry a 0 into an SLO.
func TestZeroThroughAliasRefused(t *testing.T) {
	head := "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: &s {ttft: 0s}, profile: {kvTransferTokensPerSecond: &z 0}}\n"
	for _, tc := range []struct{ pool, want string }{
		// The line is the key's whose value is 0: where the anchor's mapping was written.
		{"- {name: b, role: decode, selector: {a: b}, slo: *s}\n", "line 3: 0 is not a value pools[1].slo.ttft takes"},
		{"- {name: b, role: decode, selector: {a: b}, slo: {<<: *s}}\n", "line 3: 0 is not a value pools[1].slo.ttft takes"},
		{"- {name: b, role: decode, selector: {a: b}, profile: {decodeTokensPerSecond: *z}}\n", "line 4: 0 is not a value pools[1].profile.decodeTokensPerSecond takes"},
	} {
		_, err := Parse([]byte(head + tc.pool))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.pool, err, tc.want)
		}
	}
}

// scrape.prometheusURL's password never reaches an error (they are logged), nor does an unparsable
// URL, whose password cannot be told apart.
func TestPrometheusURLPasswordNotShown(t *testing.T) {
	pool := "pools:\n- {name: a, role: prefill, selector: {a: b}}\n"
	for _, tc := range []struct{ scrape, want string }{
		{"{prometheusURL: 'ftp://reader:s3cret@prometheus:9090'}", `scrape.prometheusURL "ftp://reader:xxxxx@prometheus:9090"`},
		{"{prometheusURL: 'http://reader:s3cret@prometheus:9090', tls: {caFile: /ca.crt}}", `scrape.prometheusURL "http://reader:xxxxx@prometheus:9090" is not https`},
		{"{prometheusURL: 'http://reader:s3cret@prometheus:port'}", `scrape.prometheusURL "(an unparsable URL, not shown)"`},
	} {
		_, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: " + tc.scrape + "\n" + pool))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error %v, want one saying %q without the password", tc.scrape, err, tc.want)
		}
	}
}

// A file that cannot be read is a refused reload like a bad one: OnReload hears it (the last reload's
// metric reads 0, not the 1 of the load before), once while it fails the same way, and the file put back
// clears it.
func TestHotReloadUnreadableFileIsRejected(t *testing.T) {
	var outcomes []error
	path, w := watchGood(t, &outcomes)
	before := w.Current()
	for _, tc := range []struct {
		name  string
		spoil func() error
		want  string
	}{
		{"deleted", func() error { return os.Remove(path) }, "no such file"},
		{"too big", func() error { return os.WriteFile(path, append([]byte(good), make([]byte, maxFileBytes)...), 0o600) }, "larger than"},
	} {
		outcomes = nil
		if err := tc.spoil(); err != nil {
			t.Fatal(err)
		}
		if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), "keeping the previous config") || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: changed=%v err=%v, want a refusal saying %q", tc.name, changed, err, tc.want)
		}
		if w.Current() != before {
			t.Fatalf("%s: the config in force changed", tc.name)
		}
		// Reported once: the next poll, failing the same way, logs nothing (Run logs each error returned).
		if changed, err := w.Reload(); changed || err != nil {
			t.Fatalf("%s: polled again: changed=%v err=%v, want nothing new to report", tc.name, changed, err)
		}
		if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
			t.Fatal(err)
		}
		if changed, err := w.Reload(); changed || err != nil {
			t.Fatalf("%s: file put back: changed=%v err=%v", tc.name, changed, err)
		}
		if len(outcomes) != 2 || outcomes[0] == nil || outcomes[1] != nil {
			t.Fatalf("%s: reload outcomes %v, want [refusal, nil]", tc.name, outcomes)
		}
	}
}

// numericKeys puts the YAML path (pools[] for any pool) and type of every numeric and duration field
// under t into out.
func numericKeys(t reflect.Type, prefix string, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		path, ft := join(prefix, name), f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == reflect.TypeOf(Duration{}), ft.Kind() == reflect.Int, ft.Kind() == reflect.Int64, ft.Kind() == reflect.Float64:
			out[path] = ft
		case ft.Kind() == reflect.Struct:
			numericKeys(ft, path, out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			numericKeys(ft.Elem(), path+"[]", out)
		}
	}
}

// valueAt is the field at a numericKeys path in v (a Config), the first pool standing for pools[].
func valueAt(v reflect.Value, pattern string) reflect.Value {
	for _, part := range strings.Split(pattern, ".") {
		name, list := strings.CutSuffix(part, "[]")
		for i := range v.NumField() {
			if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); tag == name {
				v = v.Field(i)
				break
			}
		}
		if list {
			v = v.Index(0)
		}
	}
	return v
}

// configWith is a config whose key at pattern is set to value, with the key's path as errors name it
// and its line.
func configWith(pattern, value string) (text, path string, line int) {
	const head = "version: tokenscale.io/v1alpha1\n"
	pool := "name: a, role: prefill, selector: {a: b}"
	section, key, _ := strings.Cut(pattern, ".")
	if section != "pools[]" {
		return head + section + ": {" + key + ": " + value + "}\npools:\n- {" + pool + "}\n", pattern, 2
	}
	if outer, inner, nested := strings.Cut(key, "."); nested {
		pool += ", " + outer + ": {" + inner + ": " + value + "}"
	} else {
		pool += ", " + key + ": " + value
	}
	return head + "pools:\n- {" + pool + "}\n", "pools[0]." + key, 3
}

// The node walk follows aliases within a budget: a file of nested aliases (a billion visits) is an
// error at once, not the walk's time.
func TestNodeWalkIsBounded(t *testing.T) {
	doc := "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i < 10; i++ {
		doc += fmt.Sprintf("l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	k := nodeCheck{}
	k.walk(&n, "", "")
	// Past the budget each open level's remaining children are only counted: a few dozen more visits.
	if len(k.errs) != 1 || !strings.Contains(k.errs[0].Error(), "more than 1048576 YAML nodes with aliases expanded") || k.visits > maxConfigNodes+100 {
		t.Fatalf("errors %v after %d visits, want the budget's error once, within 100 visits of %d", k.errs, k.visits, maxConfigNodes)
	}
}

// A pool without a namespace makes instances everywhere but where a pool of its name is fixed.
func TestRunsIn(t *testing.T) {
	pools := []Pool{{Name: "prefill"}, {Name: "prefill", Namespace: "team"}, {Name: "decode"}}
	for _, c := range []struct {
		pool int
		ns   string
		want bool
	}{{0, "other", true}, {0, "team", false}, {1, "team", true}, {1, "other", false}, {2, "team", true}} {
		if got := RunsIn(pools, &pools[c.pool], c.ns); got != c.want {
			t.Errorf("pool %d (%s, namespace %q) in %s: %v, want %v", c.pool, pools[c.pool].Name, pools[c.pool].Namespace, c.ns, got, c.want)
		}
	}
}

// A repeated key, or a mapping of thousands of keys, is refused from the file's nodes before the typed
// decoding, which compares every pair of a mapping's keys: 3,000 copies of one key made an error string per
// pair there (about 250 MB) and 100,000 distinct keys seconds of comparisons.
func TestMappingsAreBoundedBeforeDecoding(t *testing.T) {
	const header = "version: tokenscale.io/v1alpha1\n"
	_, err := Parse([]byte(header + strings.Repeat("a: 0\n", maxMappingKeys-1)))
	if err == nil || !strings.Contains(err.Error(), `line 3: key "a" of the top level is given twice (first at line 2)`) || strings.Contains(err.Error(), "already defined") {
		t.Fatalf("a key repeated %d times: %.300v; want it refused from the nodes, naming the lines", maxMappingKeys-1, err)
	}
	if len(err.Error()) > 16<<10 {
		t.Errorf("a key repeated %d times: a %d-byte error, want it bounded", maxMappingKeys-1, len(err.Error()))
	}
	if _, err := Parse([]byte(header + strings.Repeat("a: 0\n", 3000))); err == nil || !strings.Contains(err.Error(), "line 1: the top level holds 3001 keys") {
		t.Errorf("a key repeated 3,000 times: %.300v", err)
	}
	var b strings.Builder
	b.WriteString(header + "pools:\n- name: a\n  role: prefill\n  selector:\n")
	for i := range maxMappingKeys + 1 {
		fmt.Fprintf(&b, "    k%d: v\n", i)
	}
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("line 6: pools[0].selector holds %d keys; a mapping of the config holds at most %d", maxMappingKeys+1, maxMappingKeys)) {
		t.Errorf("a selector of %d labels: %.300v", maxMappingKeys+1, err)
	}
	if _, err := Parse([]byte(header + "pools:\n- name: a\n  name: b\n  role: prefill\n  selector: {x: y}\n")); err == nil || !strings.Contains(err.Error(), `line 4: key "name" of pools[0] is given twice (first at line 3)`) {
		t.Errorf("a pool's name given twice: %v", err)
	}
	// A merge key repeated is refused the same way: 256 copies of `<<: *p` in each of 455 pools made the
	// typed decoding's pair check write about 0.9 GB of errors.
	var m strings.Builder
	m.WriteString(header + "pools:\n- &p {name: a, role: prefill, selector: {x: y}}\n")
	for i := range 400 {
		fmt.Fprintf(&m, "- name: b%d\n", i)
		m.WriteString(strings.Repeat("  <<: *p\n", 200))
	}
	if _, err := Parse([]byte(m.String())); err == nil || !strings.Contains(err.Error(), `key "<<" of pools[1] is given twice`) || len(err.Error()) > 16<<10 {
		t.Errorf("a merge key repeated: %.300v (%d bytes)", err, len(fmt.Sprint(err)))
	}
	// A merge key's values may be overridden by the mapping's own, as YAML allows.
	if _, err := Parse([]byte(header + "pools:\n- &p {name: a, role: prefill, selector: {x: y}}\n- <<: *p\n  name: b\n")); err != nil {
		t.Errorf("a pool merged from another and renamed: %v", err)
	}
}

// A file of many errors reports a bounded number of them.
func TestNodeErrorsAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "- {name: p%d, role: prefill, selector: {x: y}, maxReplicas: 0}\n", i)
	}
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("and %d more errors", 2000-maxNodeErrors)) {
		t.Fatalf("2,000 pools with maxReplicas 0: %.300v; want %d errors and a count of the rest", err, maxNodeErrors)
	}
}

// Pools are bounded in number, and pools clashing in pairs report a bounded number of pairs: 1,000 pools
// in one group's decode slot made half a million errors (about 110 MB).
func TestPoolsAndTheirClashesAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n")
	for i := range MaxPools {
		fmt.Fprintf(&b, "- {name: p%d, namespace: x, role: decode, selector: {a: b}}\n", i)
	}
	_, err := Parse([]byte(b.String()))
	if want := fmt.Sprintf("and %d more pairs of pools that clash", MaxPools*(MaxPools-1)/2-maxPairErrors); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%d pools in one slot: %.300v; want %q", MaxPools, err, want)
	}
	if len(err.Error()) > 16<<10 {
		t.Errorf("%d pools in one slot: a %d-byte error", MaxPools, len(err.Error()))
	}
	b.Reset()
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n")
	b.WriteString(strings.Repeat("- {}\n", MaxPools+1))
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pools: %d pools; a config holds at most %d", MaxPools+1, MaxPools)) {
		t.Errorf("%d pools: %.300v", MaxPools+1, err)
	}
}

// Every interval in its range is valid alone: the timeout, staleAfter and latencyWindow defaults follow it
// (a fixed 800 ms timeout refused `interval: 500ms`, a fixed 5 s staleAfter `interval: 10s`).
func TestScrapeDefaultsFollowTheInterval(t *testing.T) {
	for _, c := range []struct {
		interval, timeout, stale, window time.Duration
	}{
		{100 * time.Millisecond, 80 * time.Millisecond, 5 * time.Second, 10 * time.Second},
		{500 * time.Millisecond, 400 * time.Millisecond, 5 * time.Second, 10 * time.Second},
		{time.Second, 800 * time.Millisecond, 5 * time.Second, 10 * time.Second},
		{10 * time.Second, 800 * time.Millisecond, 50 * time.Second, 10 * time.Second},
		{30 * time.Second, 800 * time.Millisecond, 150 * time.Second, 30 * time.Second},
		{time.Minute, 800 * time.Millisecond, 5 * time.Minute, time.Minute},
	} {
		cfg, err := Parse([]byte(fmt.Sprintf("version: tokenscale.io/v1alpha1\nscrape: {interval: %s}\npools:\n- {name: a, role: prefill, selector: {x: y}}\n", c.interval)))
		if err != nil {
			t.Errorf("interval %s alone: %v", c.interval, err)
			continue
		}
		if s := cfg.Scrape; s.Timeout.Duration != c.timeout || s.StaleAfter.Duration != c.stale || s.LatencyWindow.Duration != c.window {
			t.Errorf("interval %s: timeout %s, staleAfter %s, latencyWindow %s; want %s, %s, %s", c.interval, s.Timeout, s.StaleAfter, s.LatencyWindow, c.timeout, c.stale, c.window)
		}
	}
	// Given values are kept, and checked against the interval as before.
	if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {interval: 500ms, timeout: 800ms}\npools:\n- {name: a, role: prefill, selector: {x: y}}\n")); err == nil || !strings.Contains(err.Error(), "scrape.timeout (800ms) must not exceed scrape.interval (500ms)") {
		t.Errorf("a timeout given past the interval: %v", err)
	}
}

// A workload no object can be named is refused: a typo (an underscore, a capital) or a kind given without
// a name left every Object-metric query of the pool a 404.
func TestWorkloadNamesAreChecked(t *testing.T) {
	const pool = "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {x: y}, workload: %s}\n"
	for in, want := range map[string]string{
		"{name: Llama_Prefill}":                    `workload.name "Llama_Prefill" must be a DNS subdomain`,
		"{kind: StatefulSet}":                      `workload.kind "StatefulSet" needs workload.name`,
		"{name: " + strings.Repeat("a", 254) + "}": "must be a DNS subdomain",
	} {
		if _, err := Parse([]byte(fmt.Sprintf(pool, in))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("workload %.60s: %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"{name: llama-prefill}", "{kind: StatefulSet, name: llama.decode-0}"} {
		if _, err := Parse([]byte(fmt.Sprintf(pool, in))); err != nil {
			t.Errorf("workload %s: %v", in, err)
		}
	}
}

// Names and values from the file are clipped in the errors of the pools' checks: one 600 KB scalar reused by
// alias across 20 pools made an error of about 170 MB, every pool's errors naming it in full.
func TestPoolErrorsClipTheFilesValues(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n- {name: &big " + strings.Repeat("N", 600<<10) + ", role: prefill, selector: {x: y}}\n")
	for range 20 {
		b.WriteString("- {name: *big, namespace: *big, role: *big, selector: {x: y}, workload: {kind: *big}, engine: *big}\n")
	}
	_, err := Parse([]byte(b.String()))
	if err == nil {
		t.Fatal("pools named by a 600 KB scalar were accepted")
	}
	if len(err.Error()) > 1<<20 {
		t.Errorf("a %d-byte error for a %d-byte file", len(err.Error()), b.Len())
	}
}

// An anchor holding itself (YAML registers it before reading what it anchors) is refused: walked as a
// tree, `a: &a {x: *a}` grew a path for each of the walk's million visits.
func TestAnchorHoldingItselfIsRefused(t *testing.T) {
	for _, in := range []string{"scrape: &a {x: *a}\n", "pools: &p [*p]\n", "pools:\n- &p {name: a, selector: {x: y}, <<: *p}\n"} {
		if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\n" + in)); err == nil || !strings.Contains(err.Error(), "contains itself") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// An alias as a key stands for the key it names: the same key given by alias and by name is given twice,
// and an alias named like another key is not that key.
func TestAliasKeysAreTheKeysTheyName(t *testing.T) {
	const head = "version: tokenscale.io/v1alpha1\npools:\n- {&k name: a, role: prefill, selector: {x: y}}\n"
	if _, err := Parse([]byte(head + "- {*k: b, name: c, role: prefill, selector: {x: y}}\n")); err == nil || !strings.Contains(err.Error(), `key "name" of pools[1] is given twice`) {
		t.Errorf("a key given by alias and by name: %v", err)
	}
	if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n- {&role name: a, role: prefill, selector: {x: y}}\n- {*role: b, role: decode, selector: {x: z}}\n")); err != nil {
		t.Errorf("an alias named like another key: %v", err)
	}
	// A value given under an alias key is checked as the key's own: an explicit 0 or a fraction for
	// maxReplicas, which the typed decoder reads as 0 and then defaults to 100, is refused either way.
	const m = "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {x: y}, &m maxReplicas: 5}\n"
	for v, want := range map[string]string{
		"0":   "0 is not a value pools[1].maxReplicas takes",
		"0.5": "pools[1].maxReplicas is 0.5; it takes a whole number",
	} {
		if _, err := Parse([]byte(m + "- {name: b, role: decode, selector: {x: z}, *m: " + v + "}\n")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("maxReplicas %s given by alias: %v, want an error saying %q", v, err, want)
		}
	}
}

// A pool's name that is not plain text is quoted in its errors.
func TestPoolNamesInErrorsArePrintable(t *testing.T) {
	_, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n- {name: \"a\\x1b[31m\\nb\", role: prefill, selector: {x: y}}\n"))
	if err == nil || strings.ContainsAny(err.Error(), "\x1b") || !strings.Contains(err.Error(), `pools[0] ("a\x1b[31m\nb")`) {
		t.Errorf("a name with an escape and a newline: %q", err)
	}
}

// Keys from the file reach errors printable and cut, whichever check names them: a double-quoted key
// decodes to any characters (an escape sequence, a bidirectional override, a newline), the decoder's
// "field ... not found" names a key whole, and klog writes an error of several lines as it is.
func TestKeysInErrorsArePrintable(t *testing.T) {
	hostile := `"\e]2;x\a\u202e\nk"`
	for name, doc := range map[string]string{
		"unknown pool field": "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {x: y}, " + hostile + ": 1}\n",
		"key given no value": "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {x: y}}\npolicy: {" + hostile + ": }\n",
		"a huge unknown key": "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {x: y}}\n" + strings.Repeat("\u202e", 20000) + ": 1\n",
	} {
		_, err := Parse([]byte(doc))
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(err.Error(), "\nk") {
			t.Errorf("%s: the key's newline made a line of the error: %.300q", name, err)
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if i := strings.IndexFunc(line, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }); i >= 0 || len(line) > maxErrorLine+len("… (truncated)") {
				t.Errorf("%s: a line of %d bytes, or with a character that is not printable: %.300q", name, len(line), line)
			}
		}
	}
}

// A file rewritten in place can be read half-written: a reload applies a change only when a second read
// finds the same bytes, and the next poll reads the file whole. A refused file is reported once, not
// parsed and logged again on every poll, and a change after it is read afresh.
func TestHotReloadWaitsForAFileToSettle(t *testing.T) {
	var outcomes []error
	path, w := watchGood(t, &outcomes)
	whole := strings.Replace(good, "9000", "7000", 1)
	if whole == good {
		t.Fatal("fixture: the good config has no 9000 to change")
	}
	// The writer finishes between the reload's two reads: the prefix it read first is not applied.
	defer func(s func()) { settle = s }(settle)
	settle = func() {
		if err := os.WriteFile(path, []byte(whole), 0o600); err != nil {
			t.Error(err)
		}
	}
	if err := os.WriteFile(path, []byte(whole[:strings.Index(whole, "7000")+1]), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); changed || err != nil || len(outcomes) != 0 {
		t.Fatalf("a file read while written: changed=%v err=%v outcomes %v; want it left for the next poll", changed, err, outcomes)
	}
	settle = func() {}
	if changed, err := w.Reload(); !changed || err != nil || w.Current().Pools[0].Profile.PrefillTPS != 7000 {
		t.Fatalf("the file written whole: changed=%v err=%v", changed, err)
	}
	// Refused once, then the same bytes are left alone.
	if err := os.WriteFile(path, []byte("version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: nope, selector: {a: b}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	outcomes = nil
	if _, err := w.Reload(); err == nil {
		t.Fatal("a bad file: no error")
	}
	for range 3 {
		if changed, err := w.Reload(); changed || err != nil {
			t.Fatalf("the same bad file again: changed=%v err=%v; want it left alone", changed, err)
		}
	}
	if len(outcomes) != 1 || outcomes[0] == nil {
		t.Fatalf("outcomes %v; want the one refusal", outcomes)
	}
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); !changed || err != nil {
		t.Fatalf("a good file after the refusal: changed=%v err=%v", changed, err)
	}
}

// Nesting past maxYAMLDepth is refused before it is walked further: every level's path stays alive down
// the walk, and by estimate 10,000 levels of a 1 MiB file would hold 10 GB.
func TestParseRefusesDeepNesting(t *testing.T) {
	for name, doc := range map[string]string{
		"mappings":  "x: " + strings.Repeat("{"+strings.Repeat("k", 99)+": ", 9000) + "1" + strings.Repeat("}", 9000),
		"sequences": "x: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000),
	} {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), "nested more than 32 levels deep") || len(err.Error()) > 20000 {
			t.Errorf("%s: %.300v; want the depth refused, in a short error", name, err)
		}
	}
}

// The YAML decoder truncates a fraction given for an integer (maxReplicas: 0.5 read as 0, then the
// default 100): each integer key refuses one, naming its line. The integer keys are the Config's, found
// by their types, so a new one is covered too.
func TestParseRefusesFractionsForWholeNumbers(t *testing.T) {
	want := []string{"pools[].maxReplicas", "pools[].minReplicas", "pools[].port", "scrape.concurrency", "scrape.maxBodyBytes", "scrape.port"}
	if got := slices.Sorted(maps.Keys(configWholeNumbers)); !slices.Equal(got, want) {
		t.Errorf("integer keys %v; want %v", got, want)
	}
	for _, c := range []struct{ yaml, want string }{
		{"scrape: {concurrency: 0.9}", "line 2: scrape.concurrency is 0.9; it takes a whole number"},
		{"pools:\n- {name: p, role: prefill, selector: {a: b}, maxReplicas: 0.5}", "pools[0].maxReplicas is 0.5; it takes a whole number"},
		{"pools:\n- {name: p, role: prefill, selector: {a: b}, minReplicas: 2.9}", "pools[0].minReplicas is 2.9; it takes a whole number"},
	} {
		_, err := Parse([]byte("version: tokenscale.io/v1alpha1\n" + c.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want %q", c.yaml, err, c.want)
		}
	}
	if _, err := Parse([]byte("version: tokenscale.io/v1alpha1\npools:\n- {name: p, role: prefill, selector: {a: b}, maxReplicas: 10.0}\n")); err != nil {
		t.Errorf("maxReplicas: 10.0: %v; a whole number written with a point is one", err)
	}
}

// The decoder's own errors are bounded as the walk's are: 800 unknown keys made one error line each,
// megabytes at the file's size, logged on every reload.
func TestParseTypeErrorsAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: tokenscale.io/v1alpha1\npools:\n")
	for p := range 4 {
		fmt.Fprintf(&b, "- name: p%d\n  role: prefill\n  selector: {a: b}\n", p)
		for k := range 200 {
			fmt.Fprintf(&b, "  unknown%d: 1\n", k)
		}
	}
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "and 750 more errors") || strings.Count(err.Error(), "not found") > maxNodeErrors {
		t.Fatalf("800 unknown keys: %d bytes of error, %d lines named; want %d and a count of the rest", len(fmt.Sprint(err)), strings.Count(fmt.Sprint(err), "not found"), maxNodeErrors)
	}
}

// An interval far out of range is refused for itself alone: the defaults that follow it (timeout,
// staleAfter, latencyWindow) overflowed into values the file never set, listed beside it.
func TestHugeIntervalIsItsOwnError(t *testing.T) {
	_, err := Parse([]byte("version: tokenscale.io/v1alpha1\nscrape: {interval: 2000000h}\npools:\n- {name: p, role: prefill, selector: {a: b}}\n"))
	if err == nil || !strings.Contains(err.Error(), "scrape.interval") || strings.Contains(err.Error(), "scrape.timeout") || strings.Contains(err.Error(), "scrape.staleAfter") {
		t.Errorf("interval 2000000h: %v; want the interval refused, and nothing it did not set", err)
	}
}

// A scale-down window of exactly 20,000 rounds is the most accepted; a part of a round more is refused
// (TestParseErrors), where whole rounds counted down accepted almost a round more.
func TestScaleDownWindowOfTheMostRounds(t *testing.T) {
	for _, cfg := range []string{
		"version: tokenscale.io/v1alpha1\npolicy: {scaleDownWindow: 5h33m20s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n",
		"version: tokenscale.io/v1alpha1\nscrape: {interval: 100ms, timeout: 100ms}\npolicy: {scaleDownWindow: 2000s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n",
	} {
		if _, err := Parse([]byte(cfg)); err != nil {
			t.Errorf("%q: %v", cfg, err)
		}
	}
}
