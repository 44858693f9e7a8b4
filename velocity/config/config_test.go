package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{"negative spread", "version: tokenscale.io/v1alpha1\nscrape: {spread: -1s}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "negative"},
		{"empty selector", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill}\n", "selector"},
		{"empty", "", "empty"},
		{"bad engine", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, engine: tgi, selector: {a: b}}\n", "allowed values are auto"},
		{"interval of an hour", "version: tokenscale.io/v1alpha1\nscrape: {interval: 1h, timeout: 1s, staleAfter: 2h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.interval (1h0m0s) must be between 100ms and 1m"},
		{"body limit of a gigabyte", "version: tokenscale.io/v1alpha1\nscrape: {maxBodyBytes: 1073741824}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "at most 67108864"},
		{"ten thousand scrapes at once", "version: tokenscale.io/v1alpha1\nscrape: {concurrency: 10000}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.concurrency (10000) must be at most 4096"},
		{"stale after a day", "version: tokenscale.io/v1alpha1\nscrape: {staleAfter: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "at most 1h"},
		{"latency window of an hour", "version: tokenscale.io/v1alpha1\nscrape: {latencyWindow: 1h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "scrape.latencyWindow (1h0m0s) must be between"},
		{"cold start of a day", "version: tokenscale.io/v1alpha1\npolicy: {coldStart: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.coldStart (24h0m0s) must be at most 1h"},
		{"burst attainment of 1", "version: tokenscale.io/v1alpha1\npolicy: {burstAttainment: 1}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.burstAttainment 1 must be below 1"},
		{"scale-down quantile above 1", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownQuantile: 1.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownQuantile 1.5 must be in (0, 1]"},
		{"negative scale-down quantile", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownQuantile: -0.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownQuantile -0.5 must be in (0, 1]"},
		{"decode utilisation above 1", "version: tokenscale.io/v1alpha1\npolicy: {decodeTargetUtilisation: 1.2}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.decodeTargetUtilisation 1.2 must be in [0.01, 1]"},
		{"a day's window at 100 ms", "version: tokenscale.io/v1alpha1\nscrape: {interval: 100ms, timeout: 100ms}\npolicy: {scaleDownWindow: 24h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "spans 864000 rounds of scrape.interval (100ms): at most 20000 (33m20s at this interval)"},
		{"converted prefill of 1e-19", "version: tokenscale.io/v1alpha1\npolicy: {convertedPrefill: 1e-19}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.convertedPrefill in [0.01, 1]"},
		{"utilisation of 1e-30", "version: tokenscale.io/v1alpha1\npolicy: {targetUtilisation: 1e-30}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.targetUtilisation 1e-30 must be in [0.01, 1]"},
		{"a velocity of 5e-324", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, profile: {kvTransferTokensPerSecond: 5e-324}}\n", "profile velocities must be between 1 and 1e+07 tokens/s"},
		{"a velocity of 1e15", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, profile: {prefillTokensPerSecond: 1e15}}\n", "got prefill 1e+15"},
		{"drain of no seconds", "version: tokenscale.io/v1alpha1\npolicy: {drainSeconds: -1}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.drainSeconds -1 must be positive"},
		{"convert fraction above 1", "version: tokenscale.io/v1alpha1\npolicy: {maxConvertFraction: 1.5}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.maxConvertFraction must be in [0, 1]"},
		{"negative min replicas", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, minReplicas: -1}\n", "need 1 <= minReplicas <= maxReplicas <= 1000000 (0 or unset: 1 and 100), got -1 and 100"},
		{"two pools on one workload", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, namespace: llm, role: prefill, selector: {a: b}, workload: {name: w}}\n- {name: b, role: decode, selector: {a: c}, workload: {kind: Deployment, name: w}}\n", "pools[0] (a) and pools[1] (b) both name workload Deployment/w"},
		{"scale-down window of a year", "version: tokenscale.io/v1alpha1\npolicy: {scaleDownWindow: 8760h}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", "policy.scaleDownWindow (8760h0m0s) must be at most 24h"},
		{"ratio of 1e300", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, ratio: {min: 1e300, max: 1e300}}\n", "ratio needs 0.01 <= min <= max <= 100"},
		{"path that moves the host", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, path: \"@evil.example/m\"}\n", `path "@evil.example/m": want an absolute path`},
		{"relative scrape path", "version: tokenscale.io/v1alpha1\nscrape: {path: metrics}\npools:\n- {name: a, role: prefill, selector: {a: b}, path: /m}\n", `scrape.path "metrics": want an absolute path`},
		{"scrape scheme", "version: tokenscale.io/v1alpha1\nscrape: {scheme: ftp}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", `scrape.scheme "ftp": allowed values are http, https`},
		{"scrape port", "version: tokenscale.io/v1alpha1\nscrape: {port: 70000}\npools:\n- {name: a, role: prefill, selector: {a: b}}\n", `scrape.port 70000 out of range`},
		{"pool port", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, port: -1}\n", `pools[0] (a): port -1 out of range`},
		{"ratio inverted", "version: tokenscale.io/v1alpha1\npools:\n- {name: a, role: prefill, selector: {a: b}, ratio: {min: 2, max: 1}}\n", "ratio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || strings.Count(err.Error(), tc.want) != 1 {
				t.Fatalf("err = %v, want it to contain %q once", err, tc.want)
			}
		})
	}
}

func TestHotReloadKeepsOldOnBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
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
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []error
	w.OnReload = func(err error) { outcomes = append(outcomes, err) }
	before := w.Current()
	changedScrape := strings.Replace(good, "  interval: 1s\n", "  interval: 2s\n", 1)
	if changedScrape == good {
		t.Fatal("fixture: the good config has no scrape interval to change")
	}
	if err := os.WriteFile(path, []byte(changedScrape), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), "scrape.* changed") {
		t.Fatalf("scrape change: changed=%v err=%v, want a refusal naming scrape.*", changed, err)
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

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("version: tokenscale.io/v1alpha1\npools: [{name: a}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		for _, p := range c.Pools {
			if p.Port < 1 || p.MaxReplicas < p.MinReplicas || p.Profile.PrefillTPS <= 0 || p.Profile.DecodeTPS <= 0 {
				t.Fatalf("accepted an invalid pool: %+v", p)
			}
		}
		if c.Scrape.Timeout.Duration > c.Scrape.Interval.Duration || c.Policy.TargetUtilisation <= 0 ||
			!(c.Policy.DecodeTargetUtilisation > 0 && c.Policy.DecodeTargetUtilisation <= 1) {
			t.Fatalf("accepted invalid scrape/policy: %+v %+v", c.Scrape, c.Policy)
		}
	})
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
