# berth itself, as a static binary that drives the host's engine through the mounted
# Docker socket: the second way to run it beside the Debian package (docs/install.md).
# No registry is needed: the base is `scratch`.
#
#   scripts/build-image.sh          # builds the static binary and tags berth:latest
#   docker run -d --name berth --restart unless-stopped \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/berth:/etc/berth -v berth-state:/var/lib/berth \
#     berth:latest run
#
# berth's probes (and migrations) reach each service at its address on the project's
# bridge network: in a container of its own, berth joins each project network. With
# --network host it need not, its host-port pre-flight reads the host's sockets, and its
# endpoint is on the host's 127.0.0.1:9464 (docs/install.md, "The image").
#
# berth never recreates, stops or removes the container it runs in, even one that carries
# the project's labels; a service that would be it is refused by the pre-flight.
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/berth /berth
# The package's places: the desired state (and its env file) in /etc/berth, the state
# store in /var/lib/berth. `docker run … berth:latest apply -f /elsewhere` still works.
ENV BERTH_STATE=/var/lib/berth/state.db \
    BERTH_FILE=/etc/berth/berth.toml
WORKDIR /etc/berth
# A FROM-scratch image has no curl: berth asks its own /healthz. It is healthy once
# `berth run` serves (on its default listener, 127.0.0.1:9464).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/berth", "healthz"]
ENTRYPOINT ["/berth"]
CMD ["run"]
