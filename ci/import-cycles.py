#!/usr/bin/env python3
"""File-level import cycles of a Rust crate's sources.

An edge A -> B when file A names, through a `crate::`, `super::` or `self::` path, an item that
file B defines. Paths are resolved through modules and re-exports (`pub use`) to the file that
defines the item, so a re-export does not hide an edge. Prints each cycle (a strongly connected
set of files) largest first, and fails if one has more than MAX files.

    ci/import-cycles.py DIR MAX [--edges] [--allow FILE...]

`--allow` names the files of the one cycle that may be larger (it may not grow beyond them).
"""
import os,re,sys
root=sys.argv[1]
limit=int(sys.argv[2])
allowed=set(sys.argv[sys.argv.index('--allow')+1:]) if '--allow' in sys.argv else set()
files={}
for d,_,fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs') and '/bin' not in d:
            p=os.path.join(d,f); files[os.path.relpath(p,root)]=re.sub(r'//.*','',open(p).read())
def modpath(rel):
    parts=rel[:-3].split('/')
    if parts[-1] in ('mod','lib'): parts=parts[:-1]
    return tuple(parts)
mods={modpath(r):r for r in files}
defs={}
reexp={}
for r,s in files.items():
    m=modpath(r)
    defs[m]=set(re.findall(r'\b(?:struct|enum|fn|trait|type|const|static|union)\s+([A-Za-z_][A-Za-z0-9_]*)',s))|set(re.findall(r'macro_rules!\s+([a-z_]+)',s))
    # inline modules: treat their names as defined here
    defs[m]|=set(re.findall(r'\bmod\s+([a-z_][a-z0-9_]*)\s*\{',s))
    ex={}
    for u in re.finditer(r'\buse\s+([^;]+);',s):
        body=u.group(1).replace('\n',' ')
        def expand(prefix,txt):
            txt=txt.strip()
            mm=re.match(r'^(.*?)\{(.*)\}$',txt)
            if mm:
                pre=mm.group(1)
                depth=0;cur='';parts=[]
                for ch in mm.group(2):
                    if ch=='{':depth+=1
                    if ch=='}':depth-=1
                    if ch==',' and depth==0: parts.append(cur);cur=''
                    else: cur+=ch
                parts.append(cur)
                for p in parts:
                    if p.strip(): yield from expand(prefix+pre,p)
            else:
                full=prefix+txt
                alias=None
                if ' as ' in full: full,alias=[x.strip() for x in full.split(' as ')]
                segs=[x for x in full.split('::') if x]
                if not segs: return
                name=alias or segs[-1]
                if name=='self': name=segs[-2]; segs=segs[:-1]
                yield name,segs
        for name,segs in expand('',body):
            ex[name]=segs
    reexp[m]=ex
def base_for(m,r,first):
    if first=='crate': return ()
    if first=='self': return m
    if first=='super': return m[:-1]
    return None
def resolve(m,segs,depth=0):
    # returns defining file of the item named by segs, relative to module m
    if depth>20 or not segs: return None
    first=segs[0]
    if first in ('crate','self','super'):
        b=base_for(m,None,first); rest=segs[1:]
        while rest and rest[0]=='super': b=b[:-1]; rest=rest[1:]
        cur=b
    else:
        # a bare path: a child module of m, or a name m imported
        if m+(first,) in mods: cur=m; rest=segs
        elif first in reexp.get(m,{}) and reexp[m][first]!=segs: return resolve(m,reexp[m][first]+segs[1:],depth+1)
        else: return None
    while rest:
        if cur+(rest[0],) in mods and len(rest)>1:
            cur=cur+(rest[0],); rest=rest[1:]; continue
        if cur+(rest[0],) in mods and len(rest)==1:
            return mods[cur+(rest[0],)]
        name=rest[0]
        if name in defs.get(cur,set()): return mods.get(cur)
        if name in reexp.get(cur,{}):
            return resolve(cur,reexp[cur][name]+rest[1:],depth+1)
        return mods.get(cur)
    return mods.get(cur)
edges={r:set() for r in files}
for r,s in files.items():
    m=modpath(r)
    for mm in re.finditer(r'\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)(::\{[^;]*?\})?',s):
        segs=mm.group(1).split('::')
        targets=[]
        if mm.group(2):
            inner=mm.group(2)[3:-1]
            for part in re.split(r',',inner):
                part=part.strip().split(' as ')[0].strip()
                if not part or '{' in part or '}' in part: 
                    part=part.replace('{','').replace('}','').strip()
                    if not part: continue
                ps=[x for x in part.split('::') if x]
                if ps==['self']: ps=[]
                targets.append(segs+ps)
        else: targets.append(segs)
        for t in targets:
            f=resolve(m,t)
            if f and f!=r and not f.endswith('lib.rs'): edges[r].add(f)
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
big=sorted([s for s in sccs if len(s)>1],key=len,reverse=True)
for s in big: print(len(s),' '.join(sorted(s)))
if '--edges' in sys.argv and big:
    comp=set(big[0])
    for v in sorted(comp): print(v,'->',' '.join(sorted(w for w in edges[v] if w in comp)))
over=[s for s in big if len(s)>limit and not set(s)<=allowed]
if over:
    print(f"{root}: an import cycle of {len(over[0])} files (at most {limit}): {' '.join(sorted(over[0]))}",file=sys.stderr)
    sys.exit(1)
