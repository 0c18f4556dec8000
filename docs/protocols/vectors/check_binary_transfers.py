# Independent reader of the binary transfers body (docs/protocols/ledger.md), checked against the vectors.
import json, struct, uuid, sys
KINDS=["single","pending","post_pending","void_pending","expire_pending"]; STATES=["posted","pending","voided","expired"]
FLAGS=["linked","balancing_debit","balancing_credit","closing_debit","closing_credit","imported"]
def dec(b):
    assert b[:4]==b"\0TX1"; n,=struct.unpack(">I",b[4:8]); p=8; out=[]
    def take(k):
        nonlocal p; v=b[p:p+k]; assert len(v)==k; p+=k; return v
    u=lambda: str(uuid.UUID(bytes=take(16)))
    i64=lambda: struct.unpack(">q",take(8))[0]
    for _ in range(n):
        t={"id":u(),"kind":KINDS[take(1)[0]],"state":STATES[take(1)[0]],"debit_account":u(),"credit_account":u(),
           "amount_minor":i64(),"currency":take(3).decode(),"created_at":i64()}
        pr,=struct.unpack(">H",take(2))
        t["pending_id"]=u() if pr&1 else None
        t["pending_amount_minor"]=i64() if pr&2 else None
        t["expires_at"]=i64() if pr&4 else None
        t["link_id"]=u() if pr&8 else None
        t["rate"]={"numerator":i64(),"denominator":i64()} if pr&16 else None
        if pr&32:
            f,=struct.unpack(">H",take(2)); t["flags"]={n:True for i,n in enumerate(FLAGS) if f>>i&1}
        if pr&64: t["user_data_128"]=str(int.from_bytes(take(16),"big"))
        if pr&128: t["user_data_64"]=struct.unpack(">Q",take(8))[0]
        if pr&256: t["user_data_32"]=struct.unpack(">I",take(4))[0]
        if pr&512: t["code"]=struct.unpack(">H",take(2))[0]
        if pr&1024: l,=struct.unpack(">I",take(4)); t["memo"]=take(l).decode()
        else: t["memo"]=""
        out.append(t)
    assert p==len(b)
    return {"type":"transfers","transfers":out}
v=json.load(open(sys.argv[1]))
for x in v["binary_transfers"]:
    got=dec(bytes.fromhex(x["body_hex"]))
    assert got==x["event"], (got, x["event"])
print("python reader agrees with", len(v["binary_transfers"]), "binary vectors")
