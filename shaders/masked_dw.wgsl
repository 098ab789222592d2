// Weight gradient of a linear layer for selected output rows only:
//   out[r, c] = sum_n dy[n, rows[r]] * x[n, c]        (dW = dY^T X restricted to rows)
// The dispatch grid covers the selected rows alone, so unselected rows cost nothing.
// Register-blocked GEMM: a workgroup of 16 x 16 threads computes a 64 x 64 block of `out`, each
// thread a 4 x 4 micro-tile, staging 16 tokens of dy (selected rows) and x per step in workgroup
// memory. Edges (shapes not multiples of the tiles) load zeros and store nothing.

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;   // [n, d_out]
@group(0) @binding(1) var<storage, read_write> x: array<{{ elem }}>;    // [n, d_in]
@group(0) @binding(2) var<storage, read_write> rows: array<u32>;        // [r]
@group(0) @binding(3) var<storage, read_write> out: array<{{ elem }}>;  // [r, d_in]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;        // n, d_out, d_in, r

const BM: u32 = 64u;      // selected rows per workgroup
const BN: u32 = 64u;      // input columns per workgroup
const BK: u32 = 16u;      // tokens per step
const TM: u32 = 4u;       // rows per thread
const TN: u32 = 4u;       // columns per thread
const THREADS: u32 = 256u;

var<workgroup> tile_dy: array<{{ elem }}, 1024>;  // [BK][BM]
var<workgroup> tile_x: array<{{ elem }}, 1024>;   // [BK][BN]

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n = info[0];
    let d_out = info[1];
    let d_in = info[2];
    let r_count = info[3];
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;

    var acc: array<{{ elem }}, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    var a: array<{{ elem }}, 4>;
    var b: array<{{ elem }}, 4>;

    let steps = (n + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        // 1024 elements per tile, 4 per thread.
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * THREADS;
            let token = k0 + e / BM;
            let m = e % BM;
            var dv: {{ elem }} = 0.0;
            var xv: {{ elem }} = 0.0;
            if (token < n) {
                if (row0 + m < r_count) {
                    dv = dy[token * d_out + rows[row0 + m]];
                }
                if (col0 + m < d_in) {
                    xv = x[token * d_in + col0 + m];
                }
            }
            tile_dy[e] = dv;
            tile_x[e] = xv;
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            for (var t = 0u; t < 4u; t++) {
                a[t] = tile_dy[k * BM + lid.y * TM + t];
                b[t] = tile_x[k * BN + lid.x * TN + t];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let r = row0 + lid.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let c = col0 + lid.x * TN + j;
            if (r < r_count && c < d_in) {
                out[r * d_in + c] = acc[i * TN + j];
            }
        }
    }
}
