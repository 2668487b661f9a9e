"""Writes OUTDIR/cases.json, the manifest of a golden set, after lua/generate.sh ran its drivers.

    python manifest.py OUTDIR WRITTEN.tsv COMMANDS.txt --mode M --gunn-commit C --build-info FILE
                       --seconds S [--subst PATH=NAME ...]

WRITTEN.tsv has one line per case: name, kind, the driver's JSON list of files, the BLAS environment.
Entries of an existing manifest that were not regenerated are kept.
"""
import argparse
import datetime
import json
import os


def build_facts(path):
    facts = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition(' ')
                if key:
                    facts[key] = value
    return facts


def main():
    p = argparse.ArgumentParser()
    p.add_argument('out')
    p.add_argument('written')
    p.add_argument('commands')
    p.add_argument('--mode', required=True)
    p.add_argument('--gunn-commit', required=True)
    p.add_argument('--build-info', required=True)
    p.add_argument('--seconds', type=int, required=True)
    p.add_argument('--subst', nargs='*', default=[])
    a = p.parse_args()

    def clean(text):  # the commands without this machine's paths (longest first)
        for pair in sorted(a.subst, key=lambda s: -len(s.split('=', 1)[0])):
            path, name = pair.rsplit('=', 1)
            if path:
                text = text.replace(path, name)
        return text
    path = os.path.join(a.out, 'cases.json')
    manifest = {'format': 'gunn-golden-set 1', 'cases': {}}
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old.get('format') == manifest['format']:
            manifest['cases'] = old.get('cases', {})
    with open(a.written) as f:
        for line in f:
            name, kind, files, env = line.rstrip('\n').split('\t')
            files = json.loads(files)
            missing = [x for x in files if not os.path.isfile(os.path.join(a.out, x))]
            if missing:
                raise SystemExit(f'manifest.py: {name}: missing {", ".join(missing)}')
            manifest['cases'][name] = {'kind': kind, 'files': files, 'blas': env}
    with open(a.commands) as f:
        commands = [clean(line.strip()) for line in f if line.strip()]
    manifest['generator'] = {
        'mode': a.mode,
        'torch7_build': build_facts(a.build_info),
        'gunn_commit': a.gunn_commit,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'commands': commands,
        'seconds': a.seconds,
        'tool': 'lua/generate.sh',
    }
    with open(path, 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write('\n')


if __name__ == '__main__':
    main()
