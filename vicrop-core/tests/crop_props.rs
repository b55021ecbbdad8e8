//! Property tests of the crop selector and the high-resolution tiling.

use proptest::prelude::*;
use vicrop_core::{AdaptiveWindow, CropSelector, MapPlacement, Rect, SaliencyMap, TileGrid};

fn map_strategy() -> impl Strategy<Value = SaliencyMap> {
    (1usize..=30, 1usize..=30).prop_flat_map(|(r, c)| {
        prop::collection::vec(0f32..10.0, r * c)
            .prop_map(move |v| SaliencyMap::new(r, c, v).expect("valid map"))
    })
}

fn any_f32_map() -> impl Strategy<Value = SaliencyMap> {
    let value = prop_oneof![
        4 => -1e6f32..1e6,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
    ];
    (1usize..=24, 1usize..=24).prop_flat_map(move |(r, c)| {
        prop::collection::vec(value.clone(), r * c)
            .prop_map(move |v| SaliencyMap::new(r, c, v).expect("valid map"))
    })
}

fn image_size() -> impl Strategy<Value = (u32, u32)> {
    (1u32..=4000, 1u32..=4000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn box_is_inside_and_not_empty(map in map_strategy(), size in image_size(), side in 2u32..=600) {
        let b = AdaptiveWindow::new(side).select(&map, size);
        prop_assert!(b.x0 < b.x1 && b.y0 < b.y1, "{b:?}");
        prop_assert!(b.x1 <= size.0 && b.y1 <= size.1, "{b:?} in {size:?}");
    }

    #[test]
    fn box_side_is_twice_half_unless_image_is_smaller(map in map_strategy(), size in image_size(), side in 2u32..=600) {
        let b = AdaptiveWindow::new(side).select(&map, size);
        if (b.x0, b.y0, b.x1, b.y1) == (0, 0, size.0, size.1) {
            return Ok(()); // the whole-image return
        }
        let sides: Vec<u32> = AdaptiveWindow::RATIOS
            .iter()
            .map(|r| 2 * (f64::from(side) * r / 2.0).floor() as u32)
            .collect();
        let ok_w = sides.iter().any(|&s| b.width() == s.min(size.0));
        let ok_h = sides.iter().any(|&s| b.height() == s.min(size.1));
        prop_assert!(ok_w && ok_h, "{b:?} for {size:?}, S={side}");
        prop_assert!(b.width() == b.height() || b.width() == size.0 || b.height() == size.1);
    }

    #[test]
    fn scaling_the_map_keeps_the_box(map in map_strategy(), size in image_size(), scale in 0.01f32..100.0) {
        let selector = AdaptiveWindow::new(336);
        let scaled = SaliencyMap::new(
            map.rows(),
            map.cols(),
            map.values().iter().map(|v| v * scale).collect(),
        ).expect("map");
        prop_assert_eq!(selector.select(&map, size), selector.select(&scaled, size));
    }

    #[test]
    fn non_finite_values_never_panic_or_empty(map in any_f32_map(), size in image_size()) {
        for placement in [MapPlacement::WholeImage, MapPlacement::MapRegion] {
            let m = map.clone().with_region(Rect { x0: 10.0, y0: 0.0, x1: f64::from(size.0) - 5.0, y1: f64::from(size.1) });
            let b = AdaptiveWindow::new(336).with_placement(placement).select(&m, size);
            prop_assert!(b.x0 < b.x1 && b.y0 < b.y1 && b.x1 <= size.0 && b.y1 <= size.1, "{b:?}");
        }
    }

    #[test]
    fn tiles_cover_the_image_exactly_once(w in 1u32..=5000, h in 1u32..=5000) {
        let grid = TileGrid::for_image(w, h, 1024);
        prop_assert!(grid.rows >= 1 && grid.cols >= 1);
        let boxes = grid.boxes();
        prop_assert_eq!(boxes.len(), grid.len());
        // Tiles are disjoint and abut: column edges and row edges form a partition.
        for (k, b) in boxes.iter().enumerate() {
            let (j, i) = (k as u32 / grid.cols, k as u32 % grid.cols);
            prop_assert_eq!(b[0], i * grid.tile_w);
            prop_assert_eq!(b[2], b[0] + grid.tile_w);
            prop_assert_eq!(b[1], j * grid.tile_h);
            prop_assert_eq!(b[3], b[1] + grid.tile_h);
        }
        // Together they reach past the right and bottom edges.
        prop_assert!(grid.cols * grid.tile_w >= w && grid.rows * grid.tile_h >= h);
        // Every pixel (sampled on a lattice plus the corners) lies in exactly one tile.
        let xs: Vec<u32> = (0..w).step_by((w as usize / 37).max(1)).chain([w - 1]).collect();
        let ys: Vec<u32> = (0..h).step_by((h as usize / 37).max(1)).chain([h - 1]).collect();
        for &x in &xs {
            for &y in &ys {
                let n = boxes.iter().filter(|b| b[0] <= x && x < b[2] && b[1] <= y && y < b[3]).count();
                prop_assert_eq!(n, 1, "pixel ({}, {})", x, y);
            }
        }
    }
}

#[test]
fn uniform_small_map_on_small_image_is_whole_image() {
    let map = SaliencyMap::new(24, 24, vec![1.0; 576]).expect("map");
    let b = AdaptiveWindow::new(336).select(&map, (300, 200));
    assert_eq!(b.to_array(), [0, 0, 300, 200]);
}

#[test]
fn a_hot_spot_is_cropped_around() {
    let mut v = vec![0.0f32; 576];
    v[20 * 24 + 3] = 100.0; // row 20, column 3
    let map = SaliencyMap::new(24, 24, v).expect("map");
    let b = AdaptiveWindow::new(336).select(&map, (2400, 2400));
    // Cell (3, 20) spans x 300..400, y 2000..2100 in a 2400 px image.
    assert!(
        b.x0 <= 300 && b.x1 >= 400 && b.y0 <= 2000 && b.y1 >= 2100,
        "{b:?}"
    );
}

#[test]
fn stitch_places_tiles_row_major() {
    let grid = TileGrid {
        rows: 2,
        cols: 3,
        tile_w: 10,
        tile_h: 10,
    };
    let maps: Vec<SaliencyMap> = (0..6)
        .map(|t| SaliencyMap::new(2, 2, vec![t as f32; 4]).expect("map"))
        .collect();
    let s = grid.stitch(&maps).expect("stitch");
    assert_eq!((s.rows(), s.cols()), (4, 6));
    assert_eq!(s.get(0, 0), 0.0);
    assert_eq!(s.get(0, 5), 2.0);
    assert_eq!(s.get(3, 0), 3.0);
    assert_eq!(s.get(3, 5), 5.0);
}

#[test]
fn map_region_placement_follows_the_region() {
    // A 451x300 image seen through a 300x300 centre crop (x 75..375): a hot top-left cell lies
    // at x ~75 with MapRegion, at x ~0 with the reference's whole-image placement.
    let mut v = vec![0.0f32; 576];
    v[0] = 50.0;
    let map = SaliencyMap::new(24, 24, v).expect("map").with_region(Rect {
        x0: 75.0,
        y0: 0.0,
        x1: 375.0,
        y1: 300.0,
    });
    let whole = AdaptiveWindow::new(100).select(&map, (451, 300));
    let region = AdaptiveWindow::new(100)
        .with_placement(MapPlacement::MapRegion)
        .select(&map, (451, 300));
    assert_eq!(whole.x0, 0, "{whole:?}");
    assert!(
        region.x0 > 0 && region.x0 <= 75 && region.x1 > 75,
        "{region:?}"
    );
}
