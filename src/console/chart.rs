//! Horizontal bar charts, laid out here and drawn as inline SVG by the templates: no script, no
//! chart service, nothing the Content-Security-Policy would have to allow.

/// Width of the whole chart, of the label column, and of the longest bar, in SVG units.
pub const WIDTH: u32 = 640;
const LABEL_WIDTH: u32 = 220;
const BAR_SPACE: u32 = 340;
const ROW: u32 = 26;
const BAR: u32 = 18;

pub struct Chart {
    /// The `id` of the chart's title, for `aria-labelledby`.
    pub id: String,
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
}

pub struct Bar {
    pub label: String,
    /// What is written after the bar: the figure, or the suppression mark.
    pub value: String,
    pub y: u32,
    pub text_y: u32,
    pub bar_x: u32,
    pub bar_width: u32,
    pub bar_height: u32,
    pub value_x: u32,
    pub suppressed: bool,
}

/// One row of a chart: its label, its value (`None`: suppressed) and the value as written.
pub struct Row {
    pub label: String,
    pub value: Option<f64>,
    pub text: String,
}

impl Chart {
    /// Bars scaled to the largest value, or to `max` if given (100 for percentages).
    pub fn new(id: &str, title: &str, rows: Vec<Row>, max: Option<f64>) -> Chart {
        let largest =
            max.unwrap_or_else(|| rows.iter().filter_map(|r| r.value).fold(0.0_f64, f64::max));
        let bars = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let y = i as u32 * ROW + 4;
                let bar_width = match row.value {
                    Some(v) if largest > 0.0 => {
                        ((v / largest).clamp(0.0, 1.0) * f64::from(BAR_SPACE)).round() as u32
                    }
                    _ => 0,
                };
                Bar {
                    label: row.label,
                    suppressed: row.value.is_none(),
                    value: row.text,
                    y,
                    text_y: y + BAR - 4,
                    bar_x: LABEL_WIDTH,
                    bar_width,
                    bar_height: BAR,
                    value_x: LABEL_WIDTH + bar_width + 6,
                }
            })
            .collect::<Vec<_>>();
        Chart {
            id: id.to_owned(),
            title: title.to_owned(),
            width: WIDTH,
            height: bars.len() as u32 * ROW + 8,
            bars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_suppressed_ones_have_none() {
        let chart = Chart::new(
            "c",
            "t",
            vec![
                Row {
                    label: "a".into(),
                    value: Some(10.0),
                    text: "10".into(),
                },
                Row {
                    label: "b".into(),
                    value: Some(5.0),
                    text: "5".into(),
                },
                Row {
                    label: "c".into(),
                    value: None,
                    text: "•".into(),
                },
            ],
            None,
        );
        assert_eq!(chart.bars[0].bar_width, BAR_SPACE);
        assert_eq!(chart.bars[1].bar_width, BAR_SPACE / 2);
        assert_eq!(chart.bars[2].bar_width, 0);
        assert!(chart.bars[2].suppressed);
        assert_eq!(chart.height, 3 * ROW + 8);
    }
}
