package main

import (
	"fmt"
	"log/slog"

	"github.com/cached-dev/cached/internal/signing"
)

type keygenCmd struct {
	Name          string `arg:"" help:"Key name, conventionally <host>-<n> (e.g. cache.example.org-1); it appears in every signature."`
	SecretKeyFile string `help:"Where to write the secret key (default NAME.secret)." type:"path" config:"-"`
	PublicKeyFile string `help:"Where to write the public key (default NAME.public)." type:"path" config:"-"`
}

func (k *keygenCmd) Run(log *slog.Logger) error {
	if k.SecretKeyFile == "" {
		k.SecretKeyFile = k.Name + ".secret"
	}
	if k.PublicKeyFile == "" {
		k.PublicKeyFile = k.Name + ".public"
	}
	key, err := signing.Generate(k.Name)
	if err != nil {
		return err
	}
	if err := signing.WriteKeyPair(k.SecretKeyFile, k.PublicKeyFile, key); err != nil {
		return err
	}
	fmt.Printf("secret key: %s\npublic key: %s (in %s)\n\nnix.conf: trusted-public-keys = %s\n",
		k.SecretKeyFile, k.PublicKeyFile, k.PublicKeyFile, key.Public())
	return nil
}
