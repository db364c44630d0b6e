# shellcheck shell=bash
# Checks that one run of the suite is complete, sourced by run_host.sh and
# run_guest.sh. A case that never printed its line (a lost console line, a
# crashed suite, a group that was not run) must fail the run, as must a
# summary that does not add up or says failed!=0, or an exit status that
# contradicts it.
#
# conf_verify PROFILE KIND OUTPUT EXIT EXPECTED
#   KIND      run (the suite's `run`) or check (the host-side `check`)
#   OUTPUT    the suite's output: CONF lines and one CONF-SUMMARY
#   EXIT      its exit status (0 when failed=0, 1 when a case failed)
#   EXPECTED  file: the labels that must appear, one a line
#             (`vfsd_conformance groups|checks PROFILE`, second column)
# Prints verdict lines in the suite's format, named harness.PROFILE/...:
#   harness.P/KIND_complete   every expected case printed exactly one verdict
#   harness.P/KIND_ran:LABEL  FAIL: LABEL printed no verdict (or several)
#   harness.P/KIND_extra:LABEL FAIL: a verdict for a case not in the list
#   harness.P/KIND_summary    CONF-SUMMARY present once, equal to the verdicts
#                             counted, and failed=0
#   harness.P/KIND_exit       EXIT agrees with the summary (0, or 1 if failed)
conf_verify() {
  local profile=$1 kind=$2 out=$3 status=$4 expected=$5
  local h="harness.$profile/$kind" label n bad=0
  declare -A seen=()
  while read -r label; do
    seen[$label]=$((${seen[$label]:-0} + 1))
  done < <(sed -n 's/^CONF \([^ ]*\) \(PASS\|FAIL\|SKIP\) .*/\1/p' "$out")
  local want=0
  while read -r label; do
    [[ -n $label ]] || continue
    ((++want))
    n=${seen[$label]:-0}
    if ((n != 1)); then
      echo "CONF ${h}_ran:$label FAIL expected=1_verdict got=$n"
      bad=1
    fi
    unset "seen[$label]"
  done <"$expected"
  for label in "${!seen[@]}"; do
    echo "CONF ${h}_extra:$label FAIL expected=not_in_the_list got=${seen[$label]}_verdicts"
    bad=1
  done
  if ((bad)); then
    echo "CONF ${h}_complete FAIL expected=$want got=incomplete"
  else
    echo "CONF ${h}_complete PASS expected=$want got=$want"
  fi

  local p f s summaries
  p=$(grep -c '^CONF [^ ]* PASS ' "$out" || true)
  f=$(grep -c '^CONF [^ ]* FAIL ' "$out" || true)
  s=$(grep -c '^CONF [^ ]* SKIP ' "$out" || true)
  summaries=$(grep -c '^CONF-SUMMARY ' "$out" || true)
  local counted="passed=$p failed=$f skipped=$s" summary
  summary=$(sed -n 's/^CONF-SUMMARY \(passed=[0-9]* failed=[0-9]* skipped=[0-9]*\)$/\1/p' "$out" | head -n 1)
  if ((summaries != 1)); then
    echo "CONF ${h}_summary FAIL expected=one_CONF-SUMMARY got=${summaries}_summaries"
  elif [[ $summary != "$counted" ]]; then
    echo "CONF ${h}_summary FAIL expected=${counted// /,} got=${summary// /,}"
  elif ((f != 0)); then
    echo "CONF ${h}_summary FAIL expected=failed=0 got=failed=$f"
  else
    echo "CONF ${h}_summary PASS expected=failed=0 got=${summary// /,}"
  fi
  local want_exit=0
  [[ $summary == *" failed=0 "* ]] || want_exit=1
  if [[ $status != "$want_exit" ]]; then
    echo "CONF ${h}_exit FAIL expected=$want_exit got=$status"
  else
    echo "CONF ${h}_exit PASS expected=$want_exit got=$status"
  fi
}

# conf_daemon_verdicts PROFILE STATUS LOG: the daemon of a profile must have
# exited by itself with status 0, and its log must hold no sanitizer report.
# STATUS is its exit status, or "running" if it had to be killed.
conf_daemon_verdicts() {
  local profile=$1 status=$2 log=$3 reports
  if [[ $status == 0 ]]; then
    echo "CONF harness.$profile/daemon_exit PASS expected=0 got=0"
  else
    echo "CONF harness.$profile/daemon_exit FAIL expected=0 got=$status"
  fi
  if reports=$(grep -E "$VFSD_SANITIZER_RE" "$log"); then
    echo "CONF harness.$profile/daemon_sanitizers FAIL expected=none got=$(wc -l <<<"$reports")_report_lines"
  else
    echo "CONF harness.$profile/daemon_sanitizers PASS expected=none got=none"
  fi
}
