# Sourced by the tests in this folder. ensure_free_hugepages N makes at least N 2 MiB huge pages
# free by raising vm.nr_hugepages by what is missing, and restore_hugepages takes back exactly
# what was added (not an absolute value: other suites on the machine may have raised it too), but
# never below the value found before the raise (another process may have put back a count it saw,
# undoing the raise already) — as tests/common/hugepages.cc does.
# Without root or when the kernel cannot find the memory, the test is skipped (exit 77, ctest
# SKIP_RETURN_CODE) unless CI=true, where it fails.
_hp_nr=/proc/sys/vm/nr_hugepages
_hp_free=/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages
_hp_added=0
_hp_before=0

ensure_free_hugepages() {
  local want=$1 free
  free=$(cat "$_hp_free" 2>/dev/null || echo 0)
  if ((free < want)); then
    local add=$((want - free)) nr
    nr=$(cat "$_hp_nr")
    _hp_before=$nr
    if echo $((nr + add)) > "$_hp_nr" 2>/dev/null; then
      _hp_added=$(( $(cat "$_hp_nr") - nr ))
    fi
    free=$(cat "$_hp_free" 2>/dev/null || echo 0)
  fi
  if ((free < want)); then
    echo "hugepages: need $want free 2 MiB huge pages, have $free (root? memory?)" >&2
    restore_hugepages
    if [[ ${CI:-} == true ]]; then exit 1; fi
    exit 77
  fi
}

restore_hugepages() {
  if ((_hp_added > 0)); then
    local nr target
    nr=$(cat "$_hp_nr")
    target=$((nr - _hp_added))
    if ((target < _hp_before)); then target=$_hp_before; fi
    echo "$target" > "$_hp_nr" 2>/dev/null || true
    _hp_added=0
  fi
}
