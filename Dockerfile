# syntax=docker/dockerfile:1
#
# tokend image: two static binaries on distroless, running as uid 65532.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t tokend:dev .
#
# /tokend        the daemon (ENTRYPOINT); `tokend healthcheck` is the HEALTHCHECK, so the image needs no shell
# /fakedingtalk  the project's fake DingTalk, for DEMOS ONLY (docker-compose.yml); never point a real
#                deployment at it
#
# The build uses plain layer caching (go.mod/go.sum first), so it works with any builder. With BuildKit you
# may add `--mount=type=cache,target=/root/go/pkg/mod` and `--mount=type=cache,target=/root/.cache/go-build`
# to the two RUN lines below for faster rebuilds; nothing depends on them.

# The toolchain should be at least go.mod's go directive; otherwise GOTOOLCHAIN=auto downloads a newer one,
# which fails in builders without network. Pin with --build-arg GO_VERSION=1.26.x if the tag lags behind.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so editing code does not re-download modules.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# TARGETOS/TARGETARCH come from buildx for cross-builds; empty means the build machine's own platform.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tokend ./cmd/tokend \
 && CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/fakedingtalk ./cmd/fakedingtalk

# static-debian12:nonroot has CA certificates and tzdata, no shell, no package manager, and uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="tokend" \
      org.opencontainers.image.description="DingTalk access-token broker" \
      org.opencontainers.image.source="https://github.com/tokend/tokend" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/tokend /tokend
COPY --from=build /out/fakedingtalk /fakedingtalk
USER 65532:65532
# 8080: client API (listen), 9090: ops (ops_listen: /metrics /healthz /readyz, no auth; keep it private).
EXPOSE 8080 9090
# Probes the ops port's /healthz on 127.0.0.1:9090; ops_listen must therefore be :9090 or 0.0.0.0:9090.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 CMD ["/tokend", "healthcheck"]
ENTRYPOINT ["/tokend"]
CMD ["-config", "/etc/tokend/config.yaml"]
