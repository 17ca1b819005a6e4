package signing

import "testing"

// FuzzParseKeys: key parsing never panics, and whatever parses formats back to itself.
func FuzzParseKeys(f *testing.F) {
	k, _ := Generate("fuzz-1")
	f.Add(k.String())
	f.Add(k.Public().String())
	f.Add("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
	f.Add("no-colon")
	f.Add(":")
	f.Add("a:!!!")
	f.Fuzz(func(t *testing.T, s string) {
		if sk, err := ParseSecretKey(s); err == nil {
			if again, err := ParseSecretKey(sk.String()); err != nil || again.String() != sk.String() {
				t.Fatalf("secret key does not round-trip: %v", err)
			}
		}
		if pk, err := ParsePublicKey(s); err == nil {
			if again, err := ParsePublicKey(pk.String()); err != nil || again.String() != pk.String() {
				t.Fatalf("public key does not round-trip: %v", err)
			}
			pk.Verify("1;/nix/store/x;sha256:0;1;", s)
		}
	})
}
