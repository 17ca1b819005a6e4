# versitygw, an S3 server over a plain directory, for the compose file's single-host setup.
# Any S3-compatible store can replace it (point CACHED_S3_ENDPOINT at it and drop the service).
# The bucket is a directory: nix-cache is made here, so a new volume starts with it.
ARG GO_IMAGE=golang:1.26

FROM ${GO_IMAGE} AS build
ARG GOPROXY
ARG GOSUMDB
ARG GONOSUMDB
ARG GOFLAGS
ARG VERSITYGW_VERSION=v1.8.0
ENV GOMODCACHE=/cache/mod GOCACHE=/cache/build CGO_ENABLED=0 GOBIN=/out
RUN --mount=type=cache,target=/cache/mod --mount=type=cache,target=/cache/build \
    go install -trimpath -ldflags "-s -w" github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}
RUN mkdir -p /out/data/nix-cache

FROM scratch
COPY --from=build /out/versitygw /versitygw
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME /data
EXPOSE 7070
ENV VGW_PORT=:7070
ENTRYPOINT ["/versitygw"]
CMD ["posix", "/data"]
