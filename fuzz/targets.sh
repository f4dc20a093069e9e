# The fuzz targets and the dictionary each uses; sourced by ci.sh and run.sh.
# shellcheck shell=bash
TARGETS=(tenant_file server_file policy_roundtrip tlsrpt_decode mail http_policy intake_http dns_query)

# The -dict= flag for a target (none for a target without a dictionary).
fuzz_dict_flag() {
    local dict
    case "$1" in
    tenant_file | server_file) dict=yaml ;;
    policy_roundtrip) dict=policy ;;
    tlsrpt_decode | mail) dict=tlsrpt ;;
    http_policy | intake_http) dict=http ;;
    *) return 0 ;;
    esac
    echo "-dict=$FUZZ_DIR/dict/$dict.dict"
}
