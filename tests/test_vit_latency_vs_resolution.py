"""tools/analysis/vit_latency_vs_resolution.py on two tiny configs at small sizes (a smoke test, not a timing)."""
import csv
import json

from conftest import run_tool


def test_latency_table_csv_json_and_plot(tmp_path):
    proc = run_tool('tools/analysis/vit_latency_vs_resolution.py', 'configs/vit/vit/vit_tiny_p16_in1k-224.py',
                    'configs/vit/polysa/polysa_tiny_p16_in1k-224.py', '--sizes', '64', '96', '--warmup', '1',
                    '--repeats', '1', '--threads', '1', '--out-dir', str(tmp_path), env=dict(OMP_NUM_THREADS='1'))
    assert '[4/4] polysa_tiny_p16_in1k-224 @ 96px: 36 tokens' in proc.stderr
    with open(tmp_path / 'latency.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['config'], r['img_size'], r['tokens']) for r in rows] == [
        ('vit_tiny_p16_in1k-224', '64', '16'), ('vit_tiny_p16_in1k-224', '96', '36'),
        ('polysa_tiny_p16_in1k-224', '64', '16'), ('polysa_tiny_p16_in1k-224', '96', '36')]
    assert all(float(r['median_ms']) > 0 for r in rows)
    result = json.loads((tmp_path / 'latency.json').read_text())
    assert set(result['exponents']) == {'vit_tiny_p16_in1k-224', 'polysa_tiny_p16_in1k-224'}
    assert (tmp_path / 'latency.png').stat().st_size > 0
    assert 'config | ms@64 | ms@96 | k' in proc.stdout
