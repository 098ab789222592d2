// Weight gradient of a linear layer for selected output rows only:
//   out[r, c] = sum_n dy[n, rows[r]] * x[n, c]        (dW = dY^T X restricted to rows)
// The dispatch grid covers the selected rows alone, so unselected rows cost nothing.
// Register-blocked GEMM: a workgroup of 8 x 8 threads computes a 64 x 64 block of `out`, each
// thread 8 x 8 values held as vec4 (rows ty*4.. and 32+ty*4.., columns tx*4.. and 32+tx*4..),
// staging 16 tokens of dy (selected rows) and x per step in workgroup memory. Edges (shapes not
// multiples of the tiles) load zeros and store nothing.

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;   // [n, d_out]
@group(0) @binding(1) var<storage, read_write> x: array<{{ elem }}>;    // [n, d_in]
@group(0) @binding(2) var<storage, read_write> rows: array<u32>;        // [r]
@group(0) @binding(3) var<storage, read_write> out: array<{{ elem }}>;  // [r, d_in]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;        // n, d_out, d_in, r

const BM: u32 = 64u;      // selected rows per workgroup
const BN: u32 = 64u;      // input columns per workgroup
const BK: u32 = 16u;      // tokens per step
const THREADS: u32 = 64u;
const GROUPS: u32 = 16u;  // vec4 groups across BM (and BN)

var<workgroup> tile_dy: array<vec4<{{ elem }}>, 256>;  // [BK][BM / 4]
var<workgroup> tile_x: array<vec4<{{ elem }}>, 256>;   // [BK][BN / 4]

@compute @workgroup_size(8, 8, 1)
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

    var acc: array<vec4<{{ elem }}>, 16>;  // [8 rows][2 column groups]
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<{{ elem }}>(0.0);
    }

    let steps = (n + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        // 256 vec4 per tile, 4 per thread.
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * THREADS;
            let token = k0 + e / GROUPS;
            let g = (e % GROUPS) * 4u;
            var dv = vec4<{{ elem }}>(0.0);
            var xv = vec4<{{ elem }}>(0.0);
            if (token < n) {
                for (var j = 0u; j < 4u; j++) {
                    if (row0 + g + j < r_count) {
                        dv[j] = dy[token * d_out + rows[row0 + g + j]];
                    }
                    if (col0 + g + j < d_in) {
                        xv[j] = x[token * d_in + col0 + g + j];
                    }
                }
            }
            tile_dy[e] = dv;
            tile_x[e] = xv;
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a0 = tile_dy[k * GROUPS + lid.y];
            let a1 = tile_dy[k * GROUPS + 8u + lid.y];
            let b0 = tile_x[k * GROUPS + lid.x];
            let b1 = tile_x[k * GROUPS + 8u + lid.x];
            for (var i = 0u; i < 4u; i++) {
                acc[2u * i] += a0[i] * b0;
                acc[2u * i + 1u] += a0[i] * b1;
                acc[8u + 2u * i] += a1[i] * b0;
                acc[8u + 2u * i + 1u] += a1[i] * b1;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let r = row0 + (i / 4u) * 32u + lid.y * 4u + i % 4u;
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * i + h];
            for (var j = 0u; j < 4u; j++) {
                let c = col0 + h * 32u + lid.x * 4u + j;
                if (r < r_count && c < d_in) {
                    out[r * d_in + c] = v[j];
                }
            }
        }
    }
}
