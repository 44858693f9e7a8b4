package trace

import (
	"strings"
	"testing"
	"time"
)

func TestAzureCodeEmbedded(t *testing.T) {
	rs, err := AzureCode()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) < 8000 || rs[0].PromptTokens != 4808 || rs[0].OutputTokens != 10 {
		t.Fatalf("got %d requests, first %+v", len(rs), rs[0])
	}
	if last := rs[len(rs)-1].Arrival; last < 50*time.Minute || last > 70*time.Minute {
		t.Errorf("trace spans %s, want about an hour", last)
	}
}

func TestParseAzureErrors(t *testing.T) {
	h := "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	for _, tc := range []struct{ in, want string }{
		{"a,b\n", "x.csv:1: header"},
		{h + "2023-11-16 18:17:03.9799600,1\n", "x.csv:2: want 3 columns"},
		{h + "yesterday,1,2\n", "x.csv:2: bad TIMESTAMP"},
		{h + "2023-11-16 18:17:03.9799600,-1,2\n", "x.csv:2: token counts"},
		{h + "2023-11-16 18:17:04,1,2\n2023-11-16 18:17:03,1,2\n", "x.csv:3: timestamp"},
		{h, "no requests"},
	} {
		if _, err := ParseAzure(strings.NewReader(tc.in), "x.csv"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// The 2024 release (AzureLLMInferenceTrace_code_1week.csv, conv_1week) writes the zone offset and leaves
// the fraction out on whole seconds; its rows are read as the 2023 release's are.
func TestParseAzure2024(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2024-05-10 00:00:00.009930+00:00,2162,5\n" +
		"2024-05-10 00:00:01+00:00,2399,6\n" +
		"2024-05-10 02:00:01.5+02:00,76,15\n" // the same instant as 00:00:01.5 UTC
	rs, err := ParseAzure(strings.NewReader(in), "x.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{0, 2162, 5, nil}, {time.Second - 9930*time.Microsecond, 2399, 6, nil}, {1500*time.Millisecond - 9930*time.Microsecond, 76, 15, nil}}
	if len(rs) != len(want) {
		t.Fatalf("got %d requests, want %d", len(rs), len(want))
	}
	for i := range want {
		if rs[i].Arrival != want[i].Arrival || rs[i].PromptTokens != want[i].PromptTokens || rs[i].OutputTokens != want[i].OutputTokens {
			t.Errorf("request %d: %+v, want %+v", i, rs[i], want[i])
		}
	}
	if _, err := ParseAzure(strings.NewReader("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+0x:00,1,2\n"), "x.csv"); err == nil || !strings.Contains(err.Error(), "x.csv:2: bad TIMESTAMP") {
		t.Errorf("a bad offset: err = %v, want the file, line and column named", err)
	}
}

func FuzzParseAzure(f *testing.F) {
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n", int64(0), int64(0), 0.0, 0.0, uint16(0))
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,2162,5\n2024-05-10 00:00:01+00:00,1,2\n", int64(0), int64(0), 0.0, 0.0, uint16(0))
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n0001-01-01 00:00:00,1,1\n0001-01-01 00:00:01,1,1\n0001-01-01 01:00:00,1,1\n", int64(500), int64(1000), 0.1, 3.0, uint16(10))
	f.Fuzz(func(t *testing.T, in string, startMs, durMs int64, ts, rs float64, maxReq uint16) {
		rs0, err := ParseAzure(strings.NewReader(in), "f.csv")
		if err == nil {
			for i, r := range rs0 {
				if r.PromptTokens < 0 || r.OutputTokens < 0 || r.Arrival < 0 || (i > 0 && r.Arrival < rs0[i-1].Arrival) {
					t.Fatalf("bad request %d: %+v", i, r)
				}
			}
		}
		// The window and scales, from the input too.
		checkRead(t, in, fuzzOptions(Azure, startMs, durMs, ts, rs, maxReq))
	})
}
