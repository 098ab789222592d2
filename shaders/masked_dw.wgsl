// Weight gradient of a linear layer for selected output rows only:
//   out[r, c] = sum_n dy[n, rows[r]] * x[n, c]        (dW = dY^T X restricted to rows)
// The dispatch grid covers the selected rows alone, so unselected rows cost nothing.
// Tiled: each workgroup computes a TILE x TILE block of `out`, staging TILE tokens of dy and x
// in workgroup memory per iteration. Edges (shapes not multiples of TILE) load zeros.

@group(0) @binding(0) var<storage, read_write> dy: array<{{ elem }}>;   // [n, d_out]
@group(0) @binding(1) var<storage, read_write> x: array<{{ elem }}>;    // [n, d_in]
@group(0) @binding(2) var<storage, read_write> rows: array<u32>;        // [r]
@group(0) @binding(3) var<storage, read_write> out: array<{{ elem }}>;  // [r, d_in]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;        // n, d_out, d_in, r

const TILE: u32 = {{ tile }}u;

var<workgroup> tile_dy: array<{{ elem }}, {{ tile_area }}>;  // [token][row]
var<workgroup> tile_x: array<{{ elem }}, {{ tile_area }}>;   // [token][column]

@compute @workgroup_size({{ tile }}, {{ tile }}, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = info[0];
    let d_out = info[1];
    let d_in = info[2];
    let r_count = info[3];
    let col0 = wg.x * TILE;
    let row0 = wg.y * TILE;

    var acc: {{ elem }} = 0.0;
    let steps = (n + TILE - 1u) / TILE;
    for (var s = 0u; s < steps; s++) {
        let token = s * TILE + lid.y;
        // Thread (lid.x, lid.y) stages token `token`: column col0 + lid.x of x and selected row row0 + lid.x of dy.
        var xv: {{ elem }} = 0.0;
        var dv: {{ elem }} = 0.0;
        if (token < n) {
            if (col0 + lid.x < d_in) {
                xv = x[token * d_in + col0 + lid.x];
            }
            if (row0 + lid.x < r_count) {
                dv = dy[token * d_out + rows[row0 + lid.x]];
            }
        }
        tile_x[lid.y * TILE + lid.x] = xv;
        tile_dy[lid.y * TILE + lid.x] = dv;
        workgroupBarrier();
        for (var k = 0u; k < TILE; k++) {
            acc += tile_dy[k * TILE + lid.y] * tile_x[k * TILE + lid.x];
        }
        workgroupBarrier();
    }
    let r = row0 + lid.y;
    let c = col0 + lid.x;
    if (r < r_count && c < d_in) {
        out[r * d_in + c] = acc;
    }
}
