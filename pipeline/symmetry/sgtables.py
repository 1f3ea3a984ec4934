"""Space-group reference tables, generated from cctbx.sgtbx
by tests/data/geometry/dump_cctbx_tables.py.

SETTINGS_TEXT lists the 530 tabulated settings in cctbx's table order as
``number|Hall symbol|extended Hermann-Mauguin symbol|R`` (R marks the reference setting of the
type, the one cctbx's space_group_type uses). The settings are those of International Tables for
Crystallography Vol. A with the Hall symbols of S. R. Hall, Acta Cryst. A37 (1981) 517-525.
REFERENCE_ASU are the reciprocal-space asymmetric units of the reference settings
(cctbx sgtbx/reciprocal_space_ref_asu.cpp); ASU_OF_NUMBER[n - 1] indexes REFERENCE_ASU.
"""

# fmt: off
SETTINGS_TEXT = """
1| P 1|P 1|R
2|-P 1|P -1|R
3| P 2y|P 1 2 1|R
3| P 2|P 1 1 2|
3| P 2x|P 2 1 1|
4| P 2yb|P 1 21 1|R
4| P 2c|P 1 1 21|
4| P 2xa|P 21 1 1|
5| C 2y|C 1 2 1|R
5| A 2y|A 1 2 1|
5| I 2y|I 1 2 1|
5| A 2|A 1 1 2|
5| B 2|B 1 1 2|
5| I 2|I 1 1 2|
5| B 2x|B 2 1 1|
5| C 2x|C 2 1 1|
5| I 2x|I 2 1 1|
6| P -2y|P 1 m 1|R
6| P -2|P 1 1 m|
6| P -2x|P m 1 1|
7| P -2yc|P 1 c 1|R
7| P -2yac|P 1 n 1|
7| P -2ya|P 1 a 1|
7| P -2a|P 1 1 a|
7| P -2ab|P 1 1 n|
7| P -2b|P 1 1 b|
7| P -2xb|P b 1 1|
7| P -2xbc|P n 1 1|
7| P -2xc|P c 1 1|
8| C -2y|C 1 m 1|R
8| A -2y|A 1 m 1|
8| I -2y|I 1 m 1|
8| A -2|A 1 1 m|
8| B -2|B 1 1 m|
8| I -2|I 1 1 m|
8| B -2x|B m 1 1|
8| C -2x|C m 1 1|
8| I -2x|I m 1 1|
9| C -2yc|C 1 c 1|R
9| A -2yab|A 1 n 1|
9| I -2ya|I 1 a 1|
9| A -2ya|A 1 a 1|
9| C -2yac|C 1 n 1|
9| I -2yc|I 1 c 1|
9| A -2a|A 1 1 a|
9| B -2ab|B 1 1 n|
9| I -2b|I 1 1 b|
9| B -2b|B 1 1 b|
9| A -2ab|A 1 1 n|
9| I -2a|I 1 1 a|
9| B -2xb|B b 1 1|
9| C -2xac|C n 1 1|
9| I -2xc|I c 1 1|
9| C -2xc|C c 1 1|
9| B -2xab|B n 1 1|
9| I -2xb|I b 1 1|
10|-P 2y|P 1 2/m 1|R
10|-P 2|P 1 1 2/m|
10|-P 2x|P 2/m 1 1|
11|-P 2yb|P 1 21/m 1|R
11|-P 2c|P 1 1 21/m|
11|-P 2xa|P 21/m 1 1|
12|-C 2y|C 1 2/m 1|R
12|-A 2y|A 1 2/m 1|
12|-I 2y|I 1 2/m 1|
12|-A 2|A 1 1 2/m|
12|-B 2|B 1 1 2/m|
12|-I 2|I 1 1 2/m|
12|-B 2x|B 2/m 1 1|
12|-C 2x|C 2/m 1 1|
12|-I 2x|I 2/m 1 1|
13|-P 2yc|P 1 2/c 1|R
13|-P 2yac|P 1 2/n 1|
13|-P 2ya|P 1 2/a 1|
13|-P 2a|P 1 1 2/a|
13|-P 2ab|P 1 1 2/n|
13|-P 2b|P 1 1 2/b|
13|-P 2xb|P 2/b 1 1|
13|-P 2xbc|P 2/n 1 1|
13|-P 2xc|P 2/c 1 1|
14|-P 2ybc|P 1 21/c 1|R
14|-P 2yn|P 1 21/n 1|
14|-P 2yab|P 1 21/a 1|
14|-P 2ac|P 1 1 21/a|
14|-P 2n|P 1 1 21/n|
14|-P 2bc|P 1 1 21/b|
14|-P 2xab|P 21/b 1 1|
14|-P 2xn|P 21/n 1 1|
14|-P 2xac|P 21/c 1 1|
15|-C 2yc|C 1 2/c 1|R
15|-A 2yab|A 1 2/n 1|
15|-I 2ya|I 1 2/a 1|
15|-A 2ya|A 1 2/a 1|
15|-C 2yac|C 1 2/n 1|
15|-I 2yc|I 1 2/c 1|
15|-A 2a|A 1 1 2/a|
15|-B 2ab|B 1 1 2/n|
15|-I 2b|I 1 1 2/b|
15|-B 2b|B 1 1 2/b|
15|-A 2ab|A 1 1 2/n|
15|-I 2a|I 1 1 2/a|
15|-B 2xb|B 2/b 1 1|
15|-C 2xac|C 2/n 1 1|
15|-I 2xc|I 2/c 1 1|
15|-C 2xc|C 2/c 1 1|
15|-B 2xab|B 2/n 1 1|
15|-I 2xb|I 2/b 1 1|
16| P 2 2|P 2 2 2|R
17| P 2c 2|P 2 2 21|R
17| P 2a 2a|P 21 2 2|
17| P 2 2b|P 2 21 2|
18| P 2 2ab|P 21 21 2|R
18| P 2bc 2|P 2 21 21|
18| P 2ac 2ac|P 21 2 21|
19| P 2ac 2ab|P 21 21 21|R
20| C 2c 2|C 2 2 21|R
20| A 2a 2a|A 21 2 2|
20| B 2 2b|B 2 21 2|
21| C 2 2|C 2 2 2|R
21| A 2 2|A 2 2 2|
21| B 2 2|B 2 2 2|
22| F 2 2|F 2 2 2|R
23| I 2 2|I 2 2 2|R
24| I 2b 2c|I 21 21 21|R
25| P 2 -2|P m m 2|R
25| P -2 2|P 2 m m|
25| P -2 -2|P m 2 m|
26| P 2c -2|P m c 21|R
26| P 2c -2c|P c m 21|
26| P -2a 2a|P 21 m a|
26| P -2 2a|P 21 a m|
26| P -2 -2b|P b 21 m|
26| P -2b -2|P m 21 b|
27| P 2 -2c|P c c 2|R
27| P -2a 2|P 2 a a|
27| P -2b -2b|P b 2 b|
28| P 2 -2a|P m a 2|R
28| P 2 -2b|P b m 2|
28| P -2b 2|P 2 m b|
28| P -2c 2|P 2 c m|
28| P -2c -2c|P c 2 m|
28| P -2a -2a|P m 2 a|
29| P 2c -2ac|P c a 21|R
29| P 2c -2b|P b c 21|
29| P -2b 2a|P 21 a b|
29| P -2ac 2a|P 21 c a|
29| P -2bc -2c|P c 21 b|
29| P -2a -2ab|P b 21 a|
30| P 2 -2bc|P n c 2|R
30| P 2 -2ac|P c n 2|
30| P -2ac 2|P 2 n a|
30| P -2ab 2|P 2 a n|
30| P -2ab -2ab|P b 2 n|
30| P -2bc -2bc|P n 2 b|
31| P 2ac -2|P m n 21|R
31| P 2bc -2bc|P n m 21|
31| P -2ab 2ab|P 21 m n|
31| P -2 2ac|P 21 n m|
31| P -2 -2bc|P n 21 m|
31| P -2ab -2|P m 21 n|
32| P 2 -2ab|P b a 2|R
32| P -2bc 2|P 2 c b|
32| P -2ac -2ac|P c 2 a|
33| P 2c -2n|P n a 21|R
33| P 2c -2ab|P b n 21|
33| P -2bc 2a|P 21 n b|
33| P -2n 2a|P 21 c n|
33| P -2n -2ac|P c 21 n|
33| P -2ac -2n|P n 21 a|
34| P 2 -2n|P n n 2|R
34| P -2n 2|P 2 n n|
34| P -2n -2n|P n 2 n|
35| C 2 -2|C m m 2|R
35| A -2 2|A 2 m m|
35| B -2 -2|B m 2 m|
36| C 2c -2|C m c 21|R
36| C 2c -2c|C c m 21|
36| A -2a 2a|A 21 m a|
36| A -2 2a|A 21 a m|
36| B -2 -2b|B b 21 m|
36| B -2b -2|B m 21 b|
37| C 2 -2c|C c c 2|R
37| A -2a 2|A 2 a a|
37| B -2b -2b|B b 2 b|
38| A 2 -2|A m m 2|R
38| B 2 -2|B m m 2|
38| B -2 2|B 2 m m|
38| C -2 2|C 2 m m|
38| C -2 -2|C m 2 m|
38| A -2 -2|A m 2 m|
39| A 2 -2b|A b m 2|R
39| B 2 -2a|B m a 2|
39| B -2a 2|B 2 c m|
39| C -2a 2|C 2 m b|
39| C -2a -2a|C m 2 a|
39| A -2b -2b|A c 2 m|
40| A 2 -2a|A m a 2|R
40| B 2 -2b|B b m 2|
40| B -2b 2|B 2 m b|
40| C -2c 2|C 2 c m|
40| C -2c -2c|C c 2 m|
40| A -2a -2a|A m 2 a|
41| A 2 -2ab|A b a 2|R
41| B 2 -2ab|B b a 2|
41| B -2ab 2|B 2 c b|
41| C -2ac 2|C 2 c b|
41| C -2ac -2ac|C c 2 a|
41| A -2ab -2ab|A c 2 a|
42| F 2 -2|F m m 2|R
42| F -2 2|F 2 m m|
42| F -2 -2|F m 2 m|
43| F 2 -2d|F d d 2|R
43| F -2d 2|F 2 d d|
43| F -2d -2d|F d 2 d|
44| I 2 -2|I m m 2|R
44| I -2 2|I 2 m m|
44| I -2 -2|I m 2 m|
45| I 2 -2c|I b a 2|R
45| I -2a 2|I 2 c b|
45| I -2b -2b|I c 2 a|
46| I 2 -2a|I m a 2|R
46| I 2 -2b|I b m 2|
46| I -2b 2|I 2 m b|
46| I -2c 2|I 2 c m|
46| I -2c -2c|I c 2 m|
46| I -2a -2a|I m 2 a|
47|-P 2 2|P m m m|R
48| P 2 2 -1n|P n n n :1|
48|-P 2ab 2bc|P n n n :2|R
49|-P 2 2c|P c c m|R
49|-P 2a 2|P m a a|
49|-P 2b 2b|P b m b|
50| P 2 2 -1ab|P b a n :1|
50|-P 2ab 2b|P b a n :2|R
50| P 2 2 -1bc|P n c b :1|
50|-P 2b 2bc|P n c b :2|
50| P 2 2 -1ac|P c n a :1|
50|-P 2a 2c|P c n a :2|
51|-P 2a 2a|P m m a|R
51|-P 2b 2|P m m b|
51|-P 2 2b|P b m m|
51|-P 2c 2c|P c m m|
51|-P 2c 2|P m c m|
51|-P 2 2a|P m a m|
52|-P 2a 2bc|P n n a|R
52|-P 2b 2n|P n n b|
52|-P 2n 2b|P b n n|
52|-P 2ab 2c|P c n n|
52|-P 2ab 2n|P n c n|
52|-P 2n 2bc|P n a n|
53|-P 2ac 2|P m n a|R
53|-P 2bc 2bc|P n m b|
53|-P 2ab 2ab|P b m n|
53|-P 2 2ac|P c n m|
53|-P 2 2bc|P n c m|
53|-P 2ab 2|P m a n|
54|-P 2a 2ac|P c c a|R
54|-P 2b 2c|P c c b|
54|-P 2a 2b|P b a a|
54|-P 2ac 2c|P c a a|
54|-P 2bc 2b|P b c b|
54|-P 2b 2ab|P b a b|
55|-P 2 2ab|P b a m|R
55|-P 2bc 2|P m c b|
55|-P 2ac 2ac|P c m a|
56|-P 2ab 2ac|P c c n|R
56|-P 2ac 2bc|P n a a|
56|-P 2bc 2ab|P b n b|
57|-P 2c 2b|P b c m|R
57|-P 2c 2ac|P c a m|
57|-P 2ac 2a|P m c a|
57|-P 2b 2a|P m a b|
57|-P 2a 2ab|P b m a|
57|-P 2bc 2c|P c m b|
58|-P 2 2n|P n n m|R
58|-P 2n 2|P m n n|
58|-P 2n 2n|P n m n|
59| P 2 2ab -1ab|P m m n :1|
59|-P 2ab 2a|P m m n :2|R
59| P 2bc 2 -1bc|P n m m :1|
59|-P 2c 2bc|P n m m :2|
59| P 2ac 2ac -1ac|P m n m :1|
59|-P 2c 2a|P m n m :2|
60|-P 2n 2ab|P b c n|R
60|-P 2n 2c|P c a n|
60|-P 2a 2n|P n c a|
60|-P 2bc 2n|P n a b|
60|-P 2ac 2b|P b n a|
60|-P 2b 2ac|P c n b|
61|-P 2ac 2ab|P b c a|R
61|-P 2bc 2ac|P c a b|
62|-P 2ac 2n|P n m a|R
62|-P 2bc 2a|P m n b|
62|-P 2c 2ab|P b n m|
62|-P 2n 2ac|P c m n|
62|-P 2n 2a|P m c n|
62|-P 2c 2n|P n a m|
63|-C 2c 2|C m c m|R
63|-C 2c 2c|C c m m|
63|-A 2a 2a|A m m a|
63|-A 2 2a|A m a m|
63|-B 2 2b|B b m m|
63|-B 2b 2|B m m b|
64|-C 2ac 2|C m c a|R
64|-C 2ac 2ac|C c m b|
64|-A 2ab 2ab|A b m a|
64|-A 2 2ab|A c a m|
64|-B 2 2ab|B b c m|
64|-B 2ab 2|B m a b|
65|-C 2 2|C m m m|R
65|-A 2 2|A m m m|
65|-B 2 2|B m m m|
66|-C 2 2c|C c c m|R
66|-A 2a 2|A m a a|
66|-B 2b 2b|B b m b|
67|-C 2a 2|C m m a|R
67|-C 2a 2a|C m m b|
67|-A 2b 2b|A b m m|
67|-A 2 2b|A c m m|
67|-B 2 2a|B m c m|
67|-B 2a 2|B m a m|
68| C 2 2 -1ac|C c c a :1|
68|-C 2a 2ac|C c c a :2|R
68| C 2 2 -1ac|C c c a :1|
68|-C 2a 2c|C c c b :2|
68| A 2 2 -1ab|A b a a :1|
68|-A 2a 2b|A b a a :2|
68| A 2 2 -1ab|A b a a :1|
68|-A 2ab 2b|A c a a :2|
68| B 2 2 -1ab|B b c b :1|
68|-B 2ab 2b|B b c b :2|
68| B 2 2 -1ab|B b c b :1|
68|-B 2b 2ab|B b a b :2|
69|-F 2 2|F m m m|R
70| F 2 2 -1d|F d d d :1|
70|-F 2uv 2vw|F d d d :2|R
71|-I 2 2|I m m m|R
72|-I 2 2c|I b a m|R
72|-I 2a 2|I m c b|
72|-I 2b 2b|I c m a|
73|-I 2b 2c|I b c a|R
73|-I 2a 2b|I c a b|
74|-I 2b 2|I m m a|R
74|-I 2a 2a|I m m b|
74|-I 2c 2c|I b m m|
74|-I 2 2b|I c m m|
74|-I 2 2a|I m c m|
74|-I 2c 2|I m a m|
75| P 4|P 4|R
76| P 4w|P 41|R
77| P 4c|P 42|R
78| P 4cw|P 43|R
79| I 4|I 4|R
80| I 4bw|I 41|R
81| P -4|P -4|R
82| I -4|I -4|R
83|-P 4|P 4/m|R
84|-P 4c|P 42/m|R
85| P 4ab -1ab|P 4/n :1|
85|-P 4a|P 4/n :2|R
86| P 4n -1n|P 42/n :1|
86|-P 4bc|P 42/n :2|R
87|-I 4|I 4/m|R
88| I 4bw -1bw|I 41/a :1|
88|-I 4ad|I 41/a :2|R
89| P 4 2|P 4 2 2|R
90| P 4ab 2ab|P 4 21 2|R
91| P 4w 2c|P 41 2 2|R
92| P 4abw 2nw|P 41 21 2|R
93| P 4c 2|P 42 2 2|R
94| P 4n 2n|P 42 21 2|R
95| P 4cw 2c|P 43 2 2|R
96| P 4nw 2abw|P 43 21 2|R
97| I 4 2|I 4 2 2|R
98| I 4bw 2bw|I 41 2 2|R
99| P 4 -2|P 4 m m|R
100| P 4 -2ab|P 4 b m|R
101| P 4c -2c|P 42 c m|R
102| P 4n -2n|P 42 n m|R
103| P 4 -2c|P 4 c c|R
104| P 4 -2n|P 4 n c|R
105| P 4c -2|P 42 m c|R
106| P 4c -2ab|P 42 b c|R
107| I 4 -2|I 4 m m|R
108| I 4 -2c|I 4 c m|R
109| I 4bw -2|I 41 m d|R
110| I 4bw -2c|I 41 c d|R
111| P -4 2|P -4 2 m|R
112| P -4 2c|P -4 2 c|R
113| P -4 2ab|P -4 21 m|R
114| P -4 2n|P -4 21 c|R
115| P -4 -2|P -4 m 2|R
116| P -4 -2c|P -4 c 2|R
117| P -4 -2ab|P -4 b 2|R
118| P -4 -2n|P -4 n 2|R
119| I -4 -2|I -4 m 2|R
120| I -4 -2c|I -4 c 2|R
121| I -4 2|I -4 2 m|R
122| I -4 2bw|I -4 2 d|R
123|-P 4 2|P 4/m m m|R
124|-P 4 2c|P 4/m c c|R
125| P 4 2 -1ab|P 4/n b m :1|
125|-P 4a 2b|P 4/n b m :2|R
126| P 4 2 -1n|P 4/n n c :1|
126|-P 4a 2bc|P 4/n n c :2|R
127|-P 4 2ab|P 4/m b m|R
128|-P 4 2n|P 4/m n c|R
129| P 4ab 2ab -1ab|P 4/n m m :1|
129|-P 4a 2a|P 4/n m m :2|R
130| P 4ab 2n -1ab|P 4/n c c :1|
130|-P 4a 2ac|P 4/n c c :2|R
131|-P 4c 2|P 42/m m c|R
132|-P 4c 2c|P 42/m c m|R
133| P 4n 2c -1n|P 42/n b c :1|
133|-P 4ac 2b|P 42/n b c :2|R
134| P 4n 2 -1n|P 42/n n m :1|
134|-P 4ac 2bc|P 42/n n m :2|R
135|-P 4c 2ab|P 42/m b c|R
136|-P 4n 2n|P 42/m n m|R
137| P 4n 2n -1n|P 42/n m c :1|
137|-P 4ac 2a|P 42/n m c :2|R
138| P 4n 2ab -1n|P 42/n c m :1|
138|-P 4ac 2ac|P 42/n c m :2|R
139|-I 4 2|I 4/m m m|R
140|-I 4 2c|I 4/m c m|R
141| I 4bw 2bw -1bw|I 41/a m d :1|
141|-I 4bd 2|I 41/a m d :2|R
142| I 4bw 2aw -1bw|I 41/a c d :1|
142|-I 4bd 2c|I 41/a c d :2|R
143| P 3|P 3|R
144| P 31|P 31|R
145| P 32|P 32|R
146| R 3|R 3 :H|R
146| P 3*|R 3 :R|
147|-P 3|P -3|R
148|-R 3|R -3 :H|R
148|-P 3*|R -3 :R|
149| P 3 2|P 3 1 2|R
150| P 3 2"|P 3 2 1|R
151| P 31 2 (0 0 4)|P 31 1 2|R
152| P 31 2"|P 31 2 1|R
153| P 32 2 (0 0 2)|P 32 1 2|R
154| P 32 2"|P 32 2 1|R
155| R 3 2"|R 3 2 :H|R
155| P 3* 2|R 3 2 :R|
156| P 3 -2"|P 3 m 1|R
157| P 3 -2|P 3 1 m|R
158| P 3 -2"c|P 3 c 1|R
159| P 3 -2c|P 3 1 c|R
160| R 3 -2"|R 3 m :H|R
160| P 3* -2|R 3 m :R|
161| R 3 -2"c|R 3 c :H|R
161| P 3* -2n|R 3 c :R|
162|-P 3 2|P -3 1 m|R
163|-P 3 2c|P -3 1 c|R
164|-P 3 2"|P -3 m 1|R
165|-P 3 2"c|P -3 c 1|R
166|-R 3 2"|R -3 m :H|R
166|-P 3* 2|R -3 m :R|
167|-R 3 2"c|R -3 c :H|R
167|-P 3* 2n|R -3 c :R|
168| P 6|P 6|R
169| P 61|P 61|R
170| P 65|P 65|R
171| P 62|P 62|R
172| P 64|P 64|R
173| P 6c|P 63|R
174| P -6|P -6|R
175|-P 6|P 6/m|R
176|-P 6c|P 63/m|R
177| P 6 2|P 6 2 2|R
178| P 61 2 (0 0 5)|P 61 2 2|R
179| P 65 2 (0 0 1)|P 65 2 2|R
180| P 62 2 (0 0 4)|P 62 2 2|R
181| P 64 2 (0 0 2)|P 64 2 2|R
182| P 6c 2c|P 63 2 2|R
183| P 6 -2|P 6 m m|R
184| P 6 -2c|P 6 c c|R
185| P 6c -2|P 63 c m|R
186| P 6c -2c|P 63 m c|R
187| P -6 2|P -6 m 2|R
188| P -6c 2|P -6 c 2|R
189| P -6 -2|P -6 2 m|R
190| P -6c -2c|P -6 2 c|R
191|-P 6 2|P 6/m m m|R
192|-P 6 2c|P 6/m c c|R
193|-P 6c 2|P 63/m c m|R
194|-P 6c 2c|P 63/m m c|R
195| P 2 2 3|P 2 3|R
196| F 2 2 3|F 2 3|R
197| I 2 2 3|I 2 3|R
198| P 2ac 2ab 3|P 21 3|R
199| I 2b 2c 3|I 21 3|R
200|-P 2 2 3|P m -3|R
201| P 2 2 3 -1n|P n -3 :1|
201|-P 2ab 2bc 3|P n -3 :2|R
202|-F 2 2 3|F m -3|R
203| F 2 2 3 -1d|F d -3 :1|
203|-F 2uv 2vw 3|F d -3 :2|R
204|-I 2 2 3|I m -3|R
205|-P 2ac 2ab 3|P a -3|R
206|-I 2b 2c 3|I a -3|R
207| P 4 2 3|P 4 3 2|R
208| P 4n 2 3|P 42 3 2|R
209| F 4 2 3|F 4 3 2|R
210| F 4d 2 3|F 41 3 2|R
211| I 4 2 3|I 4 3 2|R
212| P 4acd 2ab 3|P 43 3 2|R
213| P 4bd 2ab 3|P 41 3 2|R
214| I 4bd 2c 3|I 41 3 2|R
215| P -4 2 3|P -4 3 m|R
216| F -4 2 3|F -4 3 m|R
217| I -4 2 3|I -4 3 m|R
218| P -4n 2 3|P -4 3 n|R
219| F -4a 2 3|F -4 3 c|R
220| I -4bd 2c 3|I -4 3 d|R
221|-P 4 2 3|P m -3 m|R
222| P 4 2 3 -1n|P n -3 n :1|
222|-P 4a 2bc 3|P n -3 n :2|R
223|-P 4n 2 3|P m -3 n|R
224| P 4n 2 3 -1n|P n -3 m :1|
224|-P 4bc 2bc 3|P n -3 m :2|R
225|-F 4 2 3|F m -3 m|R
226|-F 4a 2 3|F m -3 c|R
227| F 4d 2 3 -1d|F d -3 m :1|
227|-F 4vw 2vw 3|F d -3 m :2|R
228| F 4d 2 3 -1ad|F d -3 c :1|
228|-F 4ud 2vw 3|F d -3 c :2|R
229|-I 4 2 3|I m -3 m|R
230|-I 4bd 2c 3|I a -3 d|R
"""

REFERENCE_ASU = (
    'l>0 or (l==0 and (h>0 or (h==0 and k>=0)))',
    'k>=0 and (l>0 or (l==0 and h>=0))',
    'h>=0 and k>=0 and l>=0',
    'l>=0 and ((h>=0 and k>0) or (h==0 and k==0))',
    'h>=k and k>=0 and l>=0',
    '(h>=0 and k>0) or (h==0 and k==0 and l>=0)',
    'h>=k and k>=0 and (k>0 or l>=0)',
    'h>=k and k>=0 and (h>k or l>=0)',
    'h>=0 and ((l>=h and k>h) or (l==h and k==h))',
    'k>=l and l>=h and h>=0',
)

ASU_OF_NUMBER = (
    0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 7,
    6, 7, 6, 7, 7, 7, 6, 7, 6, 7, 7, 6, 6, 7, 7, 7, 7, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9,
    9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
)
# fmt: on
