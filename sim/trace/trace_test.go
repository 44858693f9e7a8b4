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

func FuzzParseAzure(f *testing.F) {
	f.Add("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n")
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := ParseAzure(strings.NewReader(in), "f.csv")
		if err != nil {
			return
		}
		for i, r := range rs {
			if r.PromptTokens < 0 || r.OutputTokens < 0 || r.Arrival < 0 || (i > 0 && r.Arrival < rs[i-1].Arrival) {
				t.Fatalf("bad request %d: %+v", i, r)
			}
		}
	})
}
