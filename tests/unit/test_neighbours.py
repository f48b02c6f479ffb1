"""Snapper configs that would delete subvault's snapshots (subvault.run.neighbours)."""

from __future__ import annotations

from pathlib import Path

from subvault.run.neighbours import hand_over_notes, parse_snapper_config, snapper_cleanup_problems


def test_parse_snapper_config_reads_shell_style_values() -> None:
    conf = parse_snapper_config('# comment\nSUBVOLUME="/var/lib/pvc"\nTIMELINE_CLEANUP="yes"\nNUMBER_LIMIT=50\nBAD="unclosed\n')
    assert conf == {"SUBVOLUME": "/var/lib/pvc", "TIMELINE_CLEANUP": "yes", "NUMBER_LIMIT": "50"}


def test_attack_snapper_cleanup_on_a_protected_subvolume_fails_check_and_names_the_config(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    pvc, home = tmp_path / "pvc", tmp_path / "home"
    pvc.mkdir()
    home.mkdir()
    (configs / "pvc").write_text(f'SUBVOLUME="{pvc}"\nTIMELINE_CLEANUP="yes"\nNUMBER_CLEANUP="no"\n')
    (configs / "home").write_text(f'SUBVOLUME="{home}"\nTIMELINE_CLEANUP="no"\nNUMBER_CLEANUP="no"\nEMPTY_PRE_POST_CLEANUP="no"\n')
    (configs / "other").write_text(f'SUBVOLUME="{tmp_path}"\nNUMBER_CLEANUP="yes"\n')
    problems = snapper_cleanup_problems([str(pvc), str(home)], configs)
    assert len(problems) == 1
    assert "snapper config pvc" in problems[0].message and "TIMELINE_CLEANUP=yes" in problems[0].message
    assert 'TIMELINE_CLEANUP="no"' in hand_over_notes([str(pvc)], configs)[0]
