package journal

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

const (
	hashA = "0123456789abcdfghijklmnpqrsvwxyz"
	hashB = "zyxwvsrqpnmlkjihgfdcba9876543210"
)

func TestFormatParseRoundTrip(t *testing.T) {
	recs := []Record{
		{Op: Put, Hash: hashA, NarInfo: []byte("StorePath: /nix/store/" + hashA + "-a\nURL: nar/x.nar\n")},
		{Op: Delete, Hash: hashB},
		{Op: Put, Hash: hashB, NarInfo: []byte{}},
		{Op: Put, Hash: hashA, NarInfo: []byte("no newline at the end")},
	}
	data := Format(recs)
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records back, want %d", len(got), len(recs))
	}
	for i := range recs {
		if got[i].Op != recs[i].Op || got[i].Hash != recs[i].Hash || !bytes.Equal(got[i].NarInfo, recs[i].NarInfo) {
			t.Errorf("record %d: %+v, want %+v", i, got[i], recs[i])
		}
	}
	if empty, err := Parse(Format(nil)); err != nil || len(empty) != 0 {
		t.Errorf("empty journal object: %v, %v", empty, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"no header", "+ " + hashA + " 0\n", "does not start with"},
		{"other version", "cached-journal 2\n", "does not start with"},
		{"no end of line", header + "- " + hashA, "no end of line"},
		{"unknown op", header + "* " + hashA + "\n", "want + or -"},
		{"no space", header + "-" + hashA + "\n", "not an operation"},
		{"empty line", header + "\n", "not an operation"},
		{"bad hash", header + "- " + strings.ToUpper(hashA) + "\n", "store hash"},
		{"short hash", header + "- abc\n", "store hash"},
		{"delete with length", header + "- " + hashA + " 3\n", "store hash"},
		{"put without length", header + "+ " + hashA + "\n", "<length>"},
		{"negative length", header + "+ " + hashA + " -1\n", "length"},
		{"length with sign", header + "+ " + hashA + " +1\nx", "length"},
		{"length with zeros", header + "+ " + hashA + " 01\nx", "length"},
		{"huge length", header + "+ " + hashA + " 99999999999999999999\n", "length"},
		{"cut short", header + "+ " + hashA + " 10\nabc", "cut short"},
		{"trailing garbage", header + "+ " + hashA + " 1\nxjunk", "record 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Parse([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, %v; want an error with %q", tc.data, recs, err, tc.want)
			}
			if recs != nil {
				t.Errorf("records returned with the error: %v", recs)
			}
		})
	}
}

func TestObjectNames(t *testing.T) {
	t1 := time.Unix(1764900000, 123456789)
	name := ObjectName(t1, "abc123")
	got, writer, err := ParseObjectName(name)
	if err != nil || !got.Equal(t1) || writer != "abc123" {
		t.Fatalf("ParseObjectName(%q) = %v, %q, %v", name, got, writer, err)
	}
	// Names sort by time, and position(t) sorts before every name written at t or later (and
	// after those written 2ns before t).
	later := ObjectName(t1.Add(time.Nanosecond), "0")
	if !(name < later) || !(position(t1) < name) || !(position(t1.Add(2*time.Nanosecond)) > name) {
		t.Errorf("names do not sort by time: %q %q %q", position(t1), name, later)
	}
	for _, bad := range []string{"journal/", "journal/123-abc", "other/" + name[len(Prefix):],
		Prefix + "0000000000000000000a-abc", Prefix + "00000000000000000001_abc",
		Prefix + "00000000000000000001-", Prefix + "00000000000000000001-ABC",
		Prefix + "00000000000000000001-a/b", Prefix + "-0000000000000000001-abc"} {
		if _, _, err := ParseObjectName(bad); err == nil {
			t.Errorf("ParseObjectName(%q) accepted", bad)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts is exactly what Format writes back.
func FuzzParse(f *testing.F) {
	f.Add([]byte(header))
	f.Add(Format([]Record{{Op: Put, Hash: hashA, NarInfo: []byte("StorePath: x\n")}, {Op: Delete, Hash: hashB}}))
	f.Add([]byte(header + "+ " + hashA + " 5\nab"))
	f.Add([]byte(header + "- " + hashA + "\n- \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := Parse(data)
		if err != nil {
			return
		}
		if again := Format(recs); !bytes.Equal(again, data) {
			t.Fatalf("Parse then Format changed the object:\n%q\n%q", data, again)
		}
	})
}
