# berth itself, as a static binary that drives the host's engine through the mounted
# Docker socket. No registry is needed: the base is `scratch`.
#
#   scripts/build-image.sh          # builds the static binary and tags berth:latest
#   docker run --rm --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v "$PWD/desired-state:/desired-state:ro" -v berth-state:/var/lib/berth \
#     berth:latest apply -f /desired-state
#
# --network host lets berth's tcp/http probes reach the containers' addresses.
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/berth /berth
ENV BERTH_STATE=/var/lib/berth/state.db
ENTRYPOINT ["/berth"]
