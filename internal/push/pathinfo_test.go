package push

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Output of Nix 2.8's `nix path-info --json -r` (a list), and the object form of newer Nix.
const (
	pathInfo28 = `[{"path":"/nix/store/jlid9zcax41zxp74vca9ihbi2ws0lxym-probe-dep","narHash":"sha256-e9vJ5kB9nT7UCtxk10a+Y2a19Y7maMawKGYAi771cgI=","narSize":120,"references":[],"deriver":"/nix/store/fngd9zjriz02zrc6h5sk9q93gr878f5z-probe-dep.drv","registrationTime":1796407720,"ultimate":true},
{"path":"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-probe-top","narHash":"sha256-gvh+kp3lgIk1n4sLzceekakFJALybfUzbSvMBXmm7ZM=","narSize":168,"references":["/nix/store/jlid9zcax41zxp74vca9ihbi2ws0lxym-probe-dep"],"deriver":"/nix/store/0xp0hki5nbicb8g9179mk4h0ylcrkjmv-probe-top.drv","registrationTime":1796407720,"ultimate":true,"signatures":["probe-1:lY8Yi+cYLzSnEzpHOMboCmDG79tO8YxbKELV4+OQ7rq0t4s4V7tH7JrJ/xTnOJck+gGS4e7fD4LCmZngGnI5Bw=="]},
{"path":"/nix/store/g3b1g9mxz992yl26z7izfh9xj0h6z4jr-t.nix","narHash":"sha256-19wQgwvocx9s+T4r1Q+lHzkGnag5Vu2dPynqAH5DYSk=","narSize":392,"references":[],"ca":"fixed:r:sha256:0ab18dz01si97yfysmirm2fhcf8zll7xaaryz5n1ywz81f1i1p6p","registrationTime":1796407723}]`
	pathInfoNew = `{"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-probe-top":{"narHash":"sha256-gvh+kp3lgIk1n4sLzceekakFJALybfUzbSvMBXmm7ZM=","narSize":168,"references":["jlid9zcax41zxp74vca9ihbi2ws0lxym-probe-dep"],"deriver":"0xp0hki5nbicb8g9179mk4h0ylcrkjmv-probe-top.drv","signatures":[]}}`
)

func TestParsePathInfoJSON(t *testing.T) {
	infos, err := ParsePathInfoJSON([]byte(pathInfo28))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 {
		t.Fatalf("%d infos, want 3", len(infos))
	}
	top := infos[2]
	if top.Path != "/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-probe-top" || top.NarSize != 168 ||
		top.References[0] != "/nix/store/jlid9zcax41zxp74vca9ihbi2ws0lxym-probe-dep" || len(top.Signatures) != 1 ||
		top.Deriver != "/nix/store/0xp0hki5nbicb8g9179mk4h0ylcrkjmv-probe-top.drv" {
		t.Fatalf("top: %+v", top)
	}
	if ca := infos[0].CA; !strings.HasPrefix(ca, "fixed:r:sha256:") {
		t.Fatalf("CA of the added file: %q", ca)
	}
	newer, err := ParsePathInfoJSON([]byte(pathInfoNew))
	if err != nil {
		t.Fatal(err)
	}
	if newer[0].References[0] != top.References[0] || newer[0].Deriver != top.Deriver || newer[0].NarHash != top.NarHash {
		t.Fatalf("object form: %+v, want it read as %+v", newer[0], top)
	}
	for _, bad := range []struct{ in, want string }{
		{`[{"path":"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-x","narHash":"md5-x","narSize":1}]`, "narHash"},
		{`[{"path":"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-x","narHash":"sha256-gvh+kp3lgIk1n4sLzceekakFJALybfUzbSvMBXmm7ZM="}]`, "narSize"},
		{`[{"path":"/tmp/x","narHash":"sha256-gvh+kp3lgIk1n4sLzceekakFJALybfUzbSvMBXmm7ZM=","narSize":1}]`, "/tmp/x"},
		{`[{"path":"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-x","narHash":"sha256-gvh+kp3lgIk1n4sLzceekakFJALybfUzbSvMBXmm7ZM=","narSize":1,"references":["../etc"]}]`, "reference"},
		{`{"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-x":null}`, "not in the local store"},
		{`[{"path":"/nix/store/zqn16184c41liq5vmij9psg8ipkrbr62-x","valid":false}]`, "not in the local store"},
		{`error: something`, "neither"},
	} {
		if _, err := ParsePathInfoJSON([]byte(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one containing %q", bad.in, err, bad.want)
		}
	}
}

func TestStorePathOf(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "nix", "store")
	sp := store + "/zqn16184c41liq5vmij9psg8ipkrbr62-probe-top"
	if err := os.MkdirAll(sp+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	other := store + "/jlid9zcax41zxp74vca9ihbi2ws0lxym-probe-dep"
	os.MkdirAll(other, 0o755)
	// A link inside the store path to another one: pushing the path must not follow it.
	os.Symlink(other, sp+"/bin/link")
	os.Symlink(sp, dir+"/result")
	os.Symlink("result", dir+"/result-rel")
	os.Symlink(dir+"/result-rel", dir+"/chain")
	os.Symlink(dir+"/chain", dir+"/loop-a")
	os.Symlink(dir+"/loop-b", dir+"/loop-b")
	os.WriteFile(dir+"/plain", nil, 0o644)
	for _, tc := range []struct{ arg, want, err string }{
		{sp, sp, ""},
		{sp + "/bin/link", sp, ""},
		{dir + "/result", sp, ""},
		{dir + "/result-rel", sp, ""},
		{dir + "/chain", sp, ""},
		{dir + "/loop-b", "", "too many levels"},
		{dir + "/plain", "", "is not in"},
		{dir + "/missing", "", "no such file"},
		{store + "/not-a-store-path", "", "is not a store path"},
	} {
		got, err := StorePathOf(tc.arg, store)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.arg) {
				t.Errorf("%s: %q, %v; want an error naming it and containing %q", tc.arg, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.arg, got, err, tc.want)
		}
	}
}

func TestHoldBackWriter(t *testing.T) {
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	for _, chunk := range []int{1, 3, 7, 8, 9, 20, 100} {
		var out strings.Builder
		h := &holdBackWriter{w: &out}
		for i := 0; i < len(data); i += chunk {
			h.Write(data[i:min(i+chunk, len(data))])
			if sent := out.Len(); sent > i+chunk-holdBack && sent != max(0, min(i+chunk, len(data))-holdBack) {
				t.Fatalf("chunk %d: %d bytes passed on after %d written", chunk, sent, min(i+chunk, len(data)))
			}
		}
		if out.String() != string(data[:len(data)-holdBack]) {
			t.Fatalf("chunk %d: before flush %q", chunk, out.String())
		}
		h.flush()
		if out.String() != string(data) {
			t.Fatalf("chunk %d: after flush %q", chunk, out.String())
		}
	}
}

func TestDumpCheckedRefusesCorruptPaths(t *testing.T) {
	root := t.TempDir()
	info := writeStorePath(t, root, "zqn16184c41liq5vmij9psg8ipkrbr62-f", "contents")
	if err := dumpChecked(info, root, &strings.Builder{}, nil); err != nil {
		t.Fatalf("intact path: %v", err)
	}
	os.WriteFile(root+info.Path, []byte("CONTENTS"), 0o644) // same size, other bytes
	if err := dumpChecked(info, root, &strings.Builder{}, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "recorded NarHash") {
		t.Fatalf("same-size corruption: %v, want ErrCorrupt", err)
	}
	os.WriteFile(root+info.Path, []byte("contents, longer"), 0o644)
	if err := dumpChecked(info, root, &strings.Builder{}, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("longer: %v, want ErrCorrupt", err)
	}
	os.WriteFile(root+info.Path, []byte("c"), 0o644)
	if err := dumpChecked(info, root, &strings.Builder{}, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "NarSize") {
		t.Fatalf("shorter: %v, want ErrCorrupt naming NarSize", err)
	}
}
